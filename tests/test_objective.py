"""The objective records how each trial ended once, in one place, whether its plan ran in the search
process or in a child process (``--isolate``: the child forwards what it learns, the parent records)."""

import collections

import isolate_plugins
import optuna
import pandas as pd
import pytest

from autocompress.config import settings_from_options
from autocompress.plugin_manager import build_host
from autocompress.search import run_search
from autocompress.study.record import DIRECTIONS, DURATION, ENDED, PLAN, REASON, TEST_ACCURACY, VAL_ACCURACY, WORK
from autocompress.testing import write_tiny_task


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 160, seed=4)
    return root


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
def test_each_trial_outcome_is_recorded_once(tiny_task, tmp_path, monkeypatch, isolate):
    writes = collections.Counter()
    set_user_attr, set_constraint = optuna.Trial.set_user_attr, optuna.Trial.set_constraint

    def count_attr(self, key, value):
        writes[self.number, key] += 1
        return set_user_attr(self, key, value)

    def count_constraint(self, key, value):
        writes[self.number, f"constraint:{key}"] += 1
        return set_constraint(self, key, value)

    monkeypatch.setattr(optuna.Trial, "set_user_attr", count_attr)
    monkeypatch.setattr(optuna.Trial, "set_constraint", count_constraint)
    out = tmp_path / "run"
    out.mkdir()
    study = optuna.create_study(study_name="local-search", storage=f"sqlite:///{out / 'study.db'}",
                                directions=list(DIRECTIONS))
    qualities = (0.9, 0.9, 0.9, 0.3)  # three complete trials, then one the median pruner stops
    for quality in qualities:
        study.enqueue_trial({"use.isolated_curve": True, "isolated_curve.quality": quality})
    options = {"model": tiny_task / "model", "data": tiny_task / "data.csv", "trials": len(qualities), "out": out,
               "repeats": 3, "warmup": 1, "no_progress": True, "techniques": ["isolated_curve"], "seed": 2,
               "max_accuracy_drop": 0.5, "pruner": "median", "isolate": isolate}
    run_search(settings_from_options(options), build_host(autoload=False,
                                                          extra_plugins=[("isolate-faults", isolate_plugins)]))

    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["ended"]) == ["complete"] * 3 + ["pruned"]
    for number in range(len(qualities)):
        for key in (PLAN, ENDED, DURATION, WORK):
            assert writes[number, key] == 1, (number, key, writes[number, key])
        for key in (REASON, VAL_ACCURACY, TEST_ACCURACY, "latency_ms", "constraint:accuracy_drop"):
            assert writes[number, key] <= 1, (number, key, writes[number, key])
    assert writes[3, REASON] == 1 and writes[3, "constraint:accuracy_drop"] == 1
    assert all(writes[n, VAL_ACCURACY] == 1 for n in range(3)) and writes[3, VAL_ACCURACY] == 0
