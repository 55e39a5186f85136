"""Multi-fidelity for a multi-objective study: Optuna's own pruners on validation-accuracy curves.

Optuna's ``Trial.report``/``should_prune`` exist only for single-objective studies, but its
pruners (median, successive halving, Hyperband) only need trials with intermediate values. So
each decision is taken on a small in-memory single-objective *view*: the finished trials' stored
curves (``record.curve_of``: step -> validation accuracy), plus the current trial's curve so far.
What a pruner remembers about a trial (successive halving's rung values) is kept with the trial
(``TrialRecorder.pruner_state``), so decisions survive restarts and workers.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from optuna.trial import TrialState, create_trial

from autocompress.study.record import PRUNER_STATE, VAL_ACCURACY, TrialRecorder, curve_of


def make_pruner(name: str) -> optuna.pruners.BasePruner | None:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return None
    raise ValueError(f"unknown pruner {name!r}")


def should_prune(pruner: optuna.pruners.BasePruner, study: optuna.Study, trial: optuna.Trial,
                 curve: Mapping[int, float]) -> bool:
    """Whether ``pruner`` would stop ``trial`` given its curve so far and the study's other curves."""
    view = optuna.create_study(direction="maximize", pruner=pruner)
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        other_curve = curve_of(other)
        if not other_curve:
            continue
        complete = other.state == TrialState.COMPLETE and VAL_ACCURACY in other.user_attrs
        view.add_trial(create_trial(
            state=TrialState.COMPLETE if complete else TrialState.PRUNED,
            value=other.user_attrs[VAL_ACCURACY] if complete else None,
            intermediate_values=other_curve,
            system_attrs=dict(other.user_attrs.get(PRUNER_STATE, {})),
        ))
    current = view.ask()
    storage = view._storage
    for key, value in trial.user_attrs.get(PRUNER_STATE, {}).items():
        storage.set_trial_system_attr(current._trial_id, key, value)
    for step, value in sorted(curve.items()):
        current.report(value, step)
    decision = pruner.prune(view, storage.get_trial(current._trial_id))
    state = {k: v for k, v in storage.get_trial_system_attrs(current._trial_id).items()
             if k.startswith("completed_rung")}
    if state:
        TrialRecorder(trial).pruner_state(state)
    return decision
