"""Optuna's pruners applied to a multi-objective study's validation-accuracy curves."""

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autocompress.search.fidelity import make_pruner, should_prune


def _study_with_curves(curves):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for curve in curves:
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[curve[max(curve)], 1.0, 1.0],
            user_attrs={"intermediate": {str(k): v for k, v in curve.items()}, "val_accuracy": curve[max(curve)]},
        ))
    return study


def test_median_pruner_stops_a_curve_below_the_others_and_keeps_a_good_one():
    study = _study_with_curves([{1: 0.80, 2: 0.84}, {1: 0.82, 2: 0.85}, {1: 0.78, 2: 0.83}, {1: 0.81, 2: 0.86}])
    pruner = make_pruner("median")
    weak, strong = study.ask(), study.ask()
    assert should_prune(pruner, study, weak, {1: 0.55, 2: 0.60})
    assert not should_prune(pruner, study, strong, {1: 0.83, 2: 0.87})


def test_no_history_never_prunes_and_none_disables():
    study = _study_with_curves([])
    assert not should_prune(make_pruner("median"), study, study.ask(), {1: 0.1})
    assert make_pruner("none") is None
    with pytest.raises(ValueError):
        make_pruner("sometimes")


def test_successive_halving_keeps_its_rung_state_with_the_trial():
    study = _study_with_curves([{1: 0.8, 2: 0.8, 4: 0.8}] * 3)
    trial = study.ask()
    should_prune(make_pruner("successive-halving"), study, trial, {1: 0.9})
    assert any(key.startswith("completed_rung") for key in trial.user_attrs["pruner_state"])
