"""The Optuna search: ``run_search(settings, host)`` is its one entry point.

Modules, one per seam: ``settings`` (what a run is asked to do), ``run`` (the entry point and its
optimisation loop), ``resume`` (run lock, interrupted-trial repair, budget count), ``environment``
(what trials share; build -> measure -> recover -> score), ``sampling`` (plan <-> Optuna
parameters), ``objective`` (one trial, and the one place its outcome is recorded), ``trial_limits``
(per-trial time and memory), ``isolate`` (a trial in a child process), ``fidelity`` (pruning on
recovery curves), ``starting_points`` and ``outputs``. What a search stores and leaves behind is
described by ``autocompress.study`` (record, layout, limits, results), which the report reads.
"""

from autocompress.search.outputs import SearchOutcome
from autocompress.search.run import run_search

__all__ = ["SearchOutcome", "run_search"]
