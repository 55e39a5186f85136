"""The Optuna search: ``run_search(settings, host)`` is its one entry point.

Modules, one per seam: ``settings`` (what a run is asked to do), ``run`` (the entry point and its
optimisation loop), ``resume`` (run lock, interrupted-trial repair, budget count), ``environment``
(what trials share; build -> measure -> recover -> score), ``sampling`` (plan <-> Optuna
parameters), ``objective`` (one trial, and the one place its outcome is recorded), ``trial_limits``
(per-trial time and memory), ``isolate`` (a trial in a child process), ``fidelity`` (pruning on
recovery curves), ``starting_points`` and ``outputs``. What a search stores and leaves behind is
described by ``autocompress.study`` (record, layout, limits, results), which the report reads.
"""

from __future__ import annotations

from typing import Any

# Imported on first use, so that reading ``autocompress.search.settings`` stays free of torch and Optuna.
_ENTRY_POINTS = {"run_search": "autocompress.search.run", "SearchOutcome": "autocompress.search.outputs"}

__all__ = ["SearchOutcome", "run_search"]


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
