"""Multi-fidelity end to end: recovery curves reach the pruner, weak trials stop early and say so."""

from dataclasses import dataclass

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution

from autocompress import hookimpl
from autocompress.config import settings_from_options
from autocompress.plugin_manager import build_host
from autocompress.search import run_search
from autocompress.study.record import DIRECTIONS
from autocompress.technique import Stage, Technique
from autocompress.testing import write_tiny_task

STEPS = (100, 200, 300, 400)


@dataclass(frozen=True)
class _CurveConfig:
    quality: float = 0.9


class ScriptedRecovery(Technique):
    """A recovery step whose validation curve is set by its parameter, so the test knows which
    trials are weak; everything around it (reporting, the pruner, recording) is the real search."""

    name = "scripted_recovery"
    stage = Stage.RECOVER
    Config = _CurveConfig
    calls: list[tuple[float, int]] = []

    @classmethod
    def search_space(cls):
        return {"quality": CategoricalDistribution([0.3, 0.9])}

    def apply(self, model, config, context):
        for step in STEPS:
            ScriptedRecovery.calls.append((config.quality, step))
            context.report(step, config.quality)
        return model


class CurvePlugin:
    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(ScriptedRecovery)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 240, seed=7)
    return root


ORDER = (0.9, 0.9, 0.9, 0.3, 0.9, 0.3, 0.9, 0.3, 0.9, 0.3)


def _queue(out, qualities):
    """Fix the order of the trials' parameters (the sampler's choice is not what is tested here)."""
    out.mkdir()
    study = optuna.create_study(study_name="local-search", storage=f"sqlite:///{out / 'study.db'}",
                                directions=list(DIRECTIONS))
    for quality in qualities:
        study.enqueue_trial({"use.scripted_recovery": True, "scripted_recovery.quality": quality})


@pytest.mark.parametrize("pruner", ["median", "successive-halving"])
def test_weak_recovery_trials_are_pruned_early_with_the_step_recorded(tiny_task, tmp_path, pruner):
    ScriptedRecovery.calls.clear()
    _queue(tmp_path / "run", ORDER)
    options = {"model": tiny_task / "model", "data": tiny_task / "data.csv", "trials": len(ORDER),
               "out": tmp_path / "run", "repeats": 3, "warmup": 1, "no_progress": True,
               "techniques": ["scripted_recovery"], "seed": 4, "pruner": pruner}
    host = build_host(autoload=False, extra_plugins=[("curves", CurvePlugin())])
    run_search(settings_from_options(options), host)
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    weak = trials[trials["param.scripted_recovery.quality"] == 0.3]
    strong = trials[trials["param.scripted_recovery.quality"] == 0.9]
    pruned = trials[trials["ended"] == "pruned"]
    assert len(weak) and len(strong)
    assert len(pruned) >= 1 and (pruned["param.scripted_recovery.quality"] == 0.3).all()
    assert (strong["ended"] == "complete").all()
    assert pruned["reason"].str.match(r"pruned at step \d+ \(validation accuracy 0\.3000\)").all()
    # Pruned trials really stopped early: fewer recovery steps ran than a full curve.
    assert len(ScriptedRecovery.calls) < len(ORDER) * len(STEPS)
    assert list(trials["param.scripted_recovery.quality"]) == list(ORDER)
    assert pruned["val_accuracy"].isna().all() and pruned["state"].eq("PRUNED").all()
    # The sampler learns from pruned trials: their last validation accuracy becomes the
    # accuracy constraint (teacher's validation accuracy - 0.3 - the 0.01 allowed drop).
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    baseline = study.user_attrs["baseline"]["val_accuracy"]
    for number in pruned["number"]:
        constraints = study.trials[number].constraints
        assert constraints == {"accuracy_drop": pytest.approx(baseline - 0.3 - 0.01)}


def test_pruner_none_lets_every_trial_finish(tiny_task, tmp_path):
    _queue(tmp_path / "run", ORDER[:6])
    options = {"model": tiny_task / "model", "data": tiny_task / "data.csv", "trials": 6, "out": tmp_path / "run",
               "repeats": 3, "warmup": 1, "no_progress": True, "techniques": ["scripted_recovery"],
               "seed": 4, "pruner": "none"}
    run_search(settings_from_options(options), build_host(autoload=False, extra_plugins=[("curves", CurvePlugin())]))
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert (trials["ended"] == "complete").all() and (trials["param.scripted_recovery.quality"] == 0.3).any()
