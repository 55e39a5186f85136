"""--isolate: each trial in a spawned child process; a segfault or a hard memory cap fails only that trial."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import isolate_plugins
import optuna
import pandas as pd
import psutil
import pytest

from autocompress import hookimpl
from autocompress.config import settings_from_options
from autocompress.errors import InputError
from autocompress.plugin_manager import build_host
from autocompress.search import isolate as isolate_module
from autocompress.search import run_search
from autocompress.search.isolate import host_recipe
from autocompress.study.record import DIRECTIONS
from autocompress.testing import write_tiny_task


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 160, seed=4)
    return root


def _queue(out, params):
    """Fix the trials' parameters in advance (what the sampler would choose is not tested here)."""
    out.mkdir()
    study = optuna.create_study(study_name="local-search", storage=f"sqlite:///{out / 'study.db'}",
                                directions=list(DIRECTIONS))
    for values in params:
        study.enqueue_trial(values)


def _search(tiny_task, out, techniques, trials, **extra):
    options = {"model": tiny_task / "model", "data": tiny_task / "data.csv", "trials": trials, "out": out,
               "repeats": 3, "warmup": 1, "no_progress": True, "techniques": techniques, "seed": 2,
               "max_accuracy_drop": 0.5, "isolate": True, **extra}
    host = build_host(autoload=False, extra_plugins=[("isolate-faults", isolate_plugins)])
    run_search(settings_from_options(options), host)
    return pd.read_csv(out / "trials.csv")


#: One isolated search serves the tests of what a child's trial does (crash, hit the memory cap, report
#: a pruned curve, match an in-process run): one search start and one child per trial, not five
#: searches. Its trials, in this order, fix every parameter (what the sampler would choose is not
#: tested here); (technique, fields), None: no technique at all.
FAULT_TECHNIQUES = ("segfaulting", "memory_hog", "isolated_curve", "quantization")
FAULT_TRIALS = [("segfaulting", {"crash": False}), ("segfaulting", {"crash": True}), ("segfaulting", {"crash": False}),
                ("memory_hog", {"megabytes": 1500}), ("memory_hog", {"megabytes": 0}),
                *[("isolated_curve", {"quality": q}) for q in (0.9, 0.9, 0.9, 0.3)],
                (None, {}), ("quantization", {"dtype": "int8", "embeddings": False}),
                ("quantization", {"dtype": "bf16"})]
SEGFAULT, MEMORY, CURVE, QUANTIZATION = slice(0, 3), slice(3, 5), slice(5, 9), slice(9, 12)


def _fixed(technique, fields, techniques=FAULT_TECHNIQUES):
    return {**{f"use.{name}": name == technique for name in techniques},
            **{f"{technique}.{field}": value for field, value in fields.items()}}


@pytest.fixture(scope="module")
def faults(tiny_task, tmp_path_factory) -> pd.DataFrame:
    """trials.csv of the isolated search of ``FAULT_TRIALS`` (median pruner, a 300 MB memory cap)."""
    out = tmp_path_factory.mktemp("faults") / "run"
    _queue(out, [_fixed(technique, fields) for technique, fields in FAULT_TRIALS])
    return _search(tiny_task, out, list(FAULT_TECHNIQUES), len(FAULT_TRIALS), trial_memory_mb=300, pruner="median")


def test_a_segfaulting_trial_fails_with_the_signal_and_technique_named_and_the_search_goes_on(faults):
    trials = faults.iloc[SEGFAULT]
    assert list(trials["state"]) == ["COMPLETE", "FAIL", "COMPLETE"]
    failed = trials.iloc[1]
    assert failed["ended"] == "failed"
    assert "child process killed by SIGSEGV while running segfaulting(crash=True)" in failed["reason"]
    for _, row in trials.iloc[[0, 2]].iterrows():
        assert row["ended"] == "complete" and row["test_accuracy"] > 0 and row["latency_ms"] > 0
    assert len(faults) == len(FAULT_TRIALS)  # and the search went on to its last trial


def test_an_allocation_over_the_hard_memory_cap_fails_the_trial_with_the_memory_reason(faults):
    trials = faults.iloc[MEMORY]
    assert list(trials["state"]) == ["FAIL", "COMPLETE"]
    reason = trials.iloc[0]["reason"]
    assert reason.startswith("TrialMemoryExceeded: trial exceeded the per-trial memory limit of 300 MB"), reason
    assert "hard cap" in reason and "technique 'memory_hog'" in reason and "allocate" in reason
    assert trials.iloc[1]["ended"] == "complete" and trials.iloc[1]["test_accuracy"] > 0


def test_isolated_results_match_an_in_process_search(tiny_task, tmp_path, faults):
    out = tmp_path / "run"
    _queue(out, [_fixed(technique, fields, ("quantization",)) for technique, fields in FAULT_TRIALS[QUANTIZATION]])
    alone, isolated = _search(tiny_task, out, ["quantization"], 3, isolate=False), faults.iloc[QUANTIZATION]
    assert list(isolated["state"]) == list(alone["state"]) == ["COMPLETE"] * 3
    assert list(isolated["plan"].fillna("")) == list(alone["plan"].fillna(""))
    assert list(isolated["test_accuracy"]) == list(alone["test_accuracy"])  # same model, same data: same predictions
    assert list(isolated["feasible"]) == list(alone["feasible"])
    assert (isolated["latency_ms"] > 0).all() and (isolated["memory_mb"] > 0).all()
    assert list(isolated["parameters"]) == list(alone["parameters"])
    assert set(alone.columns) <= set(isolated.columns)


def test_pruning_decisions_reach_the_child(faults):
    trials = faults.iloc[CURVE]
    assert list(trials["state"]) == ["COMPLETE"] * 3 + ["PRUNED"]
    pruned = trials.iloc[3]
    assert pruned["ended"] == "pruned" and pruned["reason"] == "pruned at step 100 (validation accuracy 0.3000)"


#: How long the sleeping technique's trials sleep (tests/isolate_plugins.py): far longer than any
#: search here takes, so a search (or a child) that ends before the sleep would have was stopped.
SLEEP_S = isolate_plugins.Sleeping.Config().seconds


@pytest.fixture(scope="module")
def generous_limit_s(faults) -> float:
    """Five times what one ordinary isolated trial took here, start, loading and all (measured on
    this machine now, so a busy machine gets a longer limit); far below the sleeping trials' sleep."""
    ordinary = faults.iloc[[0, 2, 4]]  # segfaulting and memory_hog trials that did nothing
    assert (ordinary["state"] == "COMPLETE").all()
    duration = float(ordinary["duration_s"].max())
    limit = round(max(1.5, 5 * duration), 1)
    if limit >= SLEEP_S / 2:
        pytest.fail(f"one isolated trial takes {duration} s here: too slow to tell a killed "
                    f"{SLEEP_S:g} s sleep from a finished one")
    return limit


@pytest.fixture(scope="module")
def stopped(tiny_task, tmp_path_factory, generous_limit_s):
    """One isolated search, loading and trials both limited to ``generous_limit_s``: the first trial's
    child hangs importing the plugins (for an hour), the second trial sleeps ``SLEEP_S``, the third
    is ordinary. Returns trials.csv, the search's wall time and the file the hanging child made."""
    root = tmp_path_factory.mktemp("stopped")
    out = root / "run"
    _queue(out, [{"use.sleeping": False}, {"use.sleeping": True, "sleeping.seconds": SLEEP_S}, {"use.sleeping": False}])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ISOLATE_TEST_HANG_ONCE", str(root / "hung"))
        patch.setattr(isolate_module, "LOAD_LIMIT_FLOOR_S", generous_limit_s)
        patch.setattr(isolate_module, "LOAD_LIMIT_FACTOR", 0.0)
        started = time.monotonic()
        trials = _search(tiny_task, out, ["sleeping"], 3, trial_timeout=generous_limit_s)
        elapsed = time.monotonic() - started
    assert list(trials["state"]) == ["FAIL", "FAIL", "COMPLETE"]
    return trials, elapsed, root / "hung"


def test_the_parent_kills_a_child_past_the_time_limit(stopped, generous_limit_s):
    trials, elapsed, _ = stopped
    assert elapsed < SLEEP_S  # the sleeping child was killed, not waited for
    assert trials.iloc[1]["ended"] == "failed"
    assert trials.iloc[1]["reason"] == ("TrialTimeout: trial exceeded the per-trial time limit of "
                                        f"{generous_limit_s:g} s (its child process was killed)")
    assert trials.iloc[2]["ended"] == "complete"


def test_a_child_that_hangs_while_loading_is_killed_and_the_search_goes_on(stopped, generous_limit_s):
    trials, _, hung = stopped
    assert hung.exists()
    assert trials.iloc[0]["ended"] == "failed"
    assert trials.iloc[0]["reason"] == ("ChildLoadTimeout: the trial's child process did not finish loading the "
                                        f"plugins, model and data within {generous_limit_s:g} s (it was killed)")
    assert trials.iloc[2]["ended"] == "complete"  # the next child loads and runs its trial


def test_a_child_may_load_for_ten_times_as_long_as_the_search_did_and_never_less_than_two_minutes():
    assert isolate_module.load_limit(1.5) == 120.0
    assert isolate_module.load_limit(30.0) == 300.0


SIGTERM_SCRIPT = """
import signal, sys
sys.path.insert(0, sys.argv[1])
import isolate_plugins
from autocompress.cli import _stop_handler
from autocompress.config import settings_from_options
from autocompress.plugin_manager import build_host
from autocompress.search import run_search
from pathlib import Path
task = Path(sys.argv[2])
options = {"model": task / "model", "data": task / "data.csv", "trials": 3, "out": Path(sys.argv[3]),
           "repeats": 3, "warmup": 1, "no_progress": True, "techniques": ["sleeping"], "isolate": True,
           "max_accuracy_drop": 0.5}
signal.signal(signal.SIGTERM, _stop_handler())
try:
    run_search(settings_from_options(options),
               build_host(autoload=False, extra_plugins=[("isolate-faults", isolate_plugins)]))
except KeyboardInterrupt:
    sys.exit(130)
"""


def _worker_in_a_trial(tiny_task, out):
    """A search process running a trial that sleeps ``SLEEP_S`` in its child process, that child,
    and when the child's sleep would end (``time.monotonic()`` clock)."""
    _queue(out, [{"use.sleeping": True, "sleeping.seconds": SLEEP_S}])
    marker = out.parent / "sleeping"
    worker = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(Path(__file__).parent), str(tiny_task),
                               str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "ISOLATE_TEST_MARKER": str(marker)})
    while not marker.exists() and worker.poll() is None:
        time.sleep(0.3)
    assert marker.exists(), f"the trial never started (the search ended with exit code {worker.returncode})"
    sleep_ends = time.monotonic() + SLEEP_S
    children = [c for c in psutil.Process(worker.pid).children() if "spawn" in " ".join(c.cmdline())]
    assert len(children) == 1
    return worker, children[0], sleep_ends


def _gone_before(process, sleep_ends: float) -> bool:
    """Whether ``process`` ends (or is a zombie) before its trial's sleep would have ended on its own:
    then something stopped it."""
    while time.monotonic() < sleep_ends:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.2)
    return False


def test_sigterm_stops_the_child_records_the_trial_as_interrupted_and_writes_the_results(tiny_task, tmp_path):
    out = tmp_path / "run"
    worker, child, sleep_ends = _worker_in_a_trial(tiny_task, out)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=sleep_ends - time.monotonic()) == 130  # stopped, not waiting for the sleep
    assert _gone_before(child, sleep_ends)
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["FAIL"]
    assert trials.iloc[0]["ended"] == "interrupted" and trials.iloc[0]["reason"] == "interrupted by the user"


def test_a_child_does_not_outlive_a_killed_search_process(tiny_task, tmp_path):
    worker, child, sleep_ends = _worker_in_a_trial(tiny_task, tmp_path / "run")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert _gone_before(child, sleep_ends), "the trial's child process kept running after its search process was killed"


def test_a_plugin_object_a_child_cannot_import_is_refused_up_front():
    class LocalPlugin:
        @hookimpl
        def autocompress_register_techniques(self, register):
            pass

    host = build_host(autoload=False, extra_plugins=[("local-thing", LocalPlugin())])
    with pytest.raises(InputError, match="--isolate: plugin 'local-thing' was registered in code"):
        host_recipe(host)
    recipe = host_recipe(build_host(autoload=False, disabled=("lora",),
                                    extra_plugins=[("isolate-faults", isolate_plugins)]))
    assert recipe.extra == (("isolate-faults", "isolate_plugins"),) and recipe.disabled == ("lora",)
    assert "segfaulting" in recipe.build().techniques
