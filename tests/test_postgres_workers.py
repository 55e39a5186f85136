"""Many workers on one PostgreSQL study: nothing lost, nothing duplicated, dead workers' trials retried.

Needs a PostgreSQL server: set AUTOCOMPRESS_TEST_POSTGRES_URL (``.ci/run`` starts one on
127.0.0.1 and sets it, together with AUTOCOMPRESS_REQUIRE_POSTGRES=1 so these tests cannot be
skipped in CI).
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pandas as pd
import pytest
import sqlalchemy
import stalling_search
from storage_race import open_at_once

from autocompress.cli import main
from autocompress.testing import write_tiny_task

URL = os.environ.get("AUTOCOMPRESS_TEST_POSTGRES_URL")
if not URL:
    if os.environ.get("AUTOCOMPRESS_REQUIRE_POSTGRES") == "1":
        raise RuntimeError("AUTOCOMPRESS_REQUIRE_POSTGRES=1 but AUTOCOMPRESS_TEST_POSTGRES_URL is not set")
    pytest.skip("no PostgreSQL server (set AUTOCOMPRESS_TEST_POSTGRES_URL)", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 160, seed=4)
    return root


@pytest.fixture
def study_name():
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=URL)
    except KeyError:
        pass


@pytest.fixture
def fresh_schema_url():
    """URL of an empty schema in the test database: Optuna's tables do not exist there yet."""
    schema = f"fresh_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(URL)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    yield f"{URL}{'&' if '?' in URL else '?'}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.mark.parametrize("round_", range(3))
def test_workers_opening_a_fresh_database_together_all_get_it(fresh_schema_url, tmp_path, round_):
    # The first open creates Optuna's schema; workers started together used to crash on a
    # duplicate type or table.
    assert open_at_once(fresh_schema_url, tmp_path / "gate") == ["opened"] * 4
    assert optuna.create_study(study_name="after", storage=fresh_schema_url).study_name == "after"


def _worker(task, out, study, trials, *extra, stall_marker=None):
    """A worker process; with ``stall_marker``, one that holds its first trial (``stalling_search.py``)."""
    arguments = ["search", "--model", str(task / "model"), "--data", str(task / "data.csv"), "--storage", URL,
                 "--study", study, "--out", str(out), "--trials", str(trials), "--no-progress", "--threads", "1",
                 "--max-accuracy-drop", "0.3", "--techniques", "ffn_pruning,quantization", *extra]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    if stall_marker is not None:
        return stalling_search.start(arguments, stall_marker, trial=0, **pipes)
    return subprocess.Popen([sys.executable, "-m", "autocompress.cli", *arguments], **pipes)


def test_three_workers_share_one_study_without_losing_or_duplicating_trials(tiny_task, tmp_path, study_name):
    workers = [_worker(tiny_task, tmp_path / f"w{i}", study_name, 12, "--repeats", "5", "--seed", str(i))
               for i in range(3)]
    for worker in workers:
        _, err = worker.communicate()
        assert worker.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name=study_name, storage=URL)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(numbers)))  # every number exactly once
    assert len(trials) >= 12 and not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    # Each worker's report is built from the database when it stops: every trial so far, whoever ran
    # it (at least the budget; others may still be finishing one). Built after all stopped: all.
    for i in range(3):
        csv = pd.read_csv(tmp_path / f"w{i}" / "trials.csv")
        assert len(csv) >= 12 and set(csv["number"]) <= set(numbers)
    assert main(["report", "--storage", URL, "--study", study_name, "--out", str(tmp_path / "report")]) == 0
    assert sorted(pd.read_csv(tmp_path / "report" / "trials.csv")["number"]) == sorted(numbers)


def test_a_killed_worker_trial_is_failed_and_retried(tiny_task, tmp_path, study_name):
    marker = tmp_path / "in-trial"
    victim = _worker(tiny_task, tmp_path / "victim", study_name, 8, "--repeats", "5", "--heartbeat", "1",
                     stall_marker=marker)
    held = stalling_search.wait_until_held(victim, marker)
    victim.send_signal(signal.SIGKILL)
    _, err = victim.communicate()
    assert held, f"the victim never started a trial:\n{err[-3000:]}"
    study = optuna.load_study(study_name=study_name, storage=URL)
    running = [t.number for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    assert running == [0]
    time.sleep(5)  # longer than the grace period (4 heartbeats)
    survivor = _worker(tiny_task, tmp_path / "survivor", study_name, 8, "--repeats", "5", "--heartbeat", "1")
    _, err = survivor.communicate()
    assert survivor.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name=study_name, storage=URL)
    by_number = {t.number: t for t in study.get_trials()}
    killed = by_number[running[0]]
    assert killed.state == optuna.trial.TrialState.FAIL
    retries = [t for t in by_number.values() if t.system_attrs.get("failed_trial") == killed.number]
    # The retry replays what the killed trial had sampled (it may have died before sampling it all).
    assert retries and retries[0].params.items() >= killed.params.items() and retries[0].state.is_finished()
    assert not [t for t in by_number.values() if t.state == optuna.trial.TrialState.RUNNING]
    csv = pd.read_csv(tmp_path / "survivor" / "trials.csv")
    assert csv.loc[csv["number"] == killed.number, "ended"].item() == "interrupted"
