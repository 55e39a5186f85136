"""Per-trial resource limits: a trial over --trial-memory-mb fails with that reason; the search goes on."""

import re
import signal
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution

from autocompress import hookimpl
from autocompress.config import settings_from_options
from autocompress.plugin_manager import build_host
from autocompress.search import run_search
from autocompress.search.trial_limits import MEMORY_SIGNAL, TrialMemoryExceeded, memory_limit
from autocompress.technique import Stage, Technique
from autocompress.testing import write_tiny_task

MB = 2**20


def _resident(megabytes: int) -> np.ndarray:
    return np.ones(megabytes * MB // 8)  # written, so every page is resident (np.empty would not be)


def test_memory_limit_raises_in_the_main_thread_with_the_cap_and_the_size():
    before = signal.getsignal(MEMORY_SIGNAL)
    with pytest.raises(TrialMemoryExceeded) as error, memory_limit(100):
        ballast = _resident(300)
        time.sleep(5)  # interrupted by the watchdog long before this ends
        del ballast
    message = str(error.value)
    assert "per-trial memory limit of 100 MB" in message
    grown = int(re.search(r"grew by (\d+) MB", message).group(1))
    # The watchdog fires once growth passes 100 MB; the message rounds to whole MB ("grew by 100 MB" for 100.4 MB
    # in one CI run).
    assert 100 <= grown <= 400
    assert signal.getsignal(MEMORY_SIGNAL) is before


def test_growth_under_the_limit_and_no_limit_pass():
    with memory_limit(200):
        ballast = _resident(20)
        time.sleep(0.5)
        del ballast
    with memory_limit(None):
        ballast = _resident(20)
        del ballast


@dataclass(frozen=True)
class _BallastConfig:
    megabytes: int = 0


class Ballast(Technique):
    """Holds ``megabytes`` of resident memory while it works, like a technique that blows up."""

    name = "ballast"
    stage = Stage.STRUCTURE
    Config = _BallastConfig

    @classmethod
    def search_space(cls):
        return {"megabytes": CategoricalDistribution([0, 300])}

    def apply(self, model, config, context):
        if config.megabytes:
            ballast = _resident(config.megabytes)
            time.sleep(3)  # still working while holding it
            model.ballast = ballast
        return model


class BallastPlugin:
    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(Ballast)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 120, seed=2)
    return root


def test_a_trial_over_the_memory_cap_fails_with_that_reason_and_the_search_goes_on(tiny_task, tmp_path):
    # The first two trials are queued (one heavy, one light), so both kinds run whatever the sampler draws
    # after (one trial more).
    (tmp_path / "start.yaml").write_text("- ballast: {megabytes: 300}\n- ballast: {megabytes: 0}\n")
    options = {"model": tiny_task / "model", "data": tiny_task / "data.csv", "trials": 3, "out": tmp_path / "run",
               "repeats": 3, "warmup": 1, "no_progress": True, "techniques": ["ballast", "quantization"],
               "sampler": "random", "seed": 9, "max_accuracy_drop": 0.5, "trial_memory_mb": 150,
               "starting_points": str(tmp_path / "start.yaml")}
    host = build_host(autoload=False, extra_plugins=[("ballast-plugin", BallastPlugin())])
    run_search(settings_from_options(options), host)
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    heavy = trials["param.use.ballast"] & (trials["param.ballast.megabytes"] == 300)
    assert len(trials) == 3 and heavy.any() and (~heavy).any()
    assert (trials.loc[heavy, "state"] == "FAIL").all()
    for reason in trials.loc[heavy, "reason"]:
        assert "per-trial memory limit of 150 MB" in reason
        assert int(re.search(r"grew by (\d+) MB", reason).group(1)) > 150
    assert (trials.loc[~heavy, "state"] == "COMPLETE").all()
    # The search went on after a failed trial.
    assert trials.loc[~heavy, "number"].max() > trials.loc[heavy, "number"].min()
