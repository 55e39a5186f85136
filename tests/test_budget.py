"""--budget: trials and/or wall time in one option."""

import json

import optuna
import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.config import UNLIMITED_TRIALS, parse_budget, settings_from_options
from autocompress.errors import InputError
from autocompress.testing import write_tiny_task


@pytest.mark.parametrize("text, expected", [
    ("40", (40, None)), ("2h", (UNLIMITED_TRIALS, 7200.0)), ("40,90m", (40, 5400.0)), ("30s", (UNLIMITED_TRIALS, 30.0)),
    ("1.5h, 12", (12, 5400.0)), ("45min", (UNLIMITED_TRIALS, 2700.0)),
])
def test_budget_forms(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("x", "neither a trial count"), ("2d", "neither a trial count"), ("4.5", "neither a trial count"),
    ("40,50", "two trial counts"), ("1h,2h", "two durations"), ("0", "must be positive"),
])
def test_bad_budgets_are_refused_with_the_accepted_forms(text, message):
    with pytest.raises(InputError, match=message):
        parse_budget(text)


def test_budget_and_trials_together_is_refused():
    with pytest.raises(InputError, match="--budget replaces --trials and --timeout"):
        settings_from_options({"budget": "10", "trials": 5})


def test_a_search_stops_at_its_budget(tmp_path):
    write_tiny_task(tmp_path, 200, seed=1)
    common = ["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data.csv"), "--repeats", "3",
              "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.3", "--techniques", "quantization"]
    assert main([*common, "--out", str(tmp_path / "a"), "--budget", "3"]) == 0
    assert len(pd.read_csv(tmp_path / "a" / "trials.csv")) == 3
    # Wall time only: Optuna stops starting trials once the time is up, however fast they run here.
    assert main([*common, "--out", str(tmp_path / "b"), "--budget", "1s"]) == 0
    assert len(pd.read_csv(tmp_path / "b" / "trials.csv")) >= 1
    study = optuna.load_study(study_name=json.loads((tmp_path / "b" / "run.json").read_text())["study"],
                              storage=f"sqlite:///{tmp_path / 'b' / 'study.db'}")
    starts = sorted(t.datetime_start for t in study.trials)
    # Every trial started within the second (counted from the first trial's start, which is after the
    # clock started); the last one may run past it, but no trial starts after.
    assert (starts[-1] - starts[0]).total_seconds() <= 1.0, starts
