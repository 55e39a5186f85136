"""A search users can trust: kill -9 and resume, impossible limits, and nothing lost."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import stalling_search
from storage_race import open_at_once

from autocompress.cli import EXIT_NOTHING_FEASIBLE, main
from autocompress.study.record import COUNTED
from autocompress.testing import write_tiny_task


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 200, seed=9)
    return root


def _command(task, out, trials, *extra):
    return ["search", "--model", str(task / "model"), "--data", str(task / "data.csv"), "--out", str(out),
            "--trials", str(trials), "--no-progress", "--max-accuracy-drop", "0.3",
            "--techniques", "ffn_pruning,quantization", *extra]


def _finished(study):
    return {t.number: (t.params, t.values) for t in study.get_trials()
            if t.state == optuna.trial.TrialState.COMPLETE}


def _start_stalling(command, tmp_path):
    """The search ``command`` in a process held in trial 2 (``stalling_search.py``), once it is there;
    and its stderr file. Fails, with that stderr, if the process ends first or never gets there."""
    log, marker = tmp_path / "stderr.txt", tmp_path / "in-trial-2"
    with log.open("w") as stderr:
        worker = stalling_search.start(command, marker, stdout=subprocess.DEVNULL, stderr=stderr)
    if not stalling_search.wait_until_held(worker, marker):
        worker.kill()
        worker.wait()
        pytest.fail(f"the search never got into trial 2 (exit {worker.returncode}):\n{log.read_text()[-3000:]}")
    return worker, log


def test_sigkill_mid_trial_then_the_same_command_resumes(tiny_task, tmp_path):
    out = tmp_path / "run"
    worker, _ = _start_stalling(_command(tiny_task, out, 6, "--repeats", "5"), tmp_path)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{out / 'study.db'}")
    before = _finished(study)
    running = [t.number for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    assert sorted(before) == [0, 1] and running == [2]

    assert main(_command(tiny_task, out, 6, "--repeats", "5")) == 0
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{out / 'study.db'}")
    after = _finished(study)
    assert {n: after[n] for n in before} == before  # finished trials untouched
    interrupted = [t for t in study.get_trials() if t.number in running]
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs["ended"] == "interrupted"
               for t in interrupted)
    retried = [t for t in study.get_trials() if t.user_attrs.get("retry_of") in running]
    assert retried and retried[0].params == interrupted[0].params
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["ended"] != "interrupted").sum() == 6  # the budget counts only real outcomes


@pytest.mark.parametrize("round_", range(3))
def test_processes_opening_a_fresh_database_together_all_get_it(tmp_path, round_):
    # Optuna creates its tables on first open; processes doing so at once used to crash with
    # "table ... already exists" or a duplicate schema-version row.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert open_at_once(url, tmp_path / "gate") == ["opened"] * 4
    assert optuna.create_study(study_name="after", storage=url).study_name == "after"


def test_impossible_limits_end_with_the_nearest_candidates_and_their_gaps(tiny_task, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(_command(tiny_task, out, 4, "--max-latency-ms", "0.0001", "--repeats", "5"))
    assert code == EXIT_NOTHING_FEASIBLE
    printed = capsys.readouterr().out
    assert "no candidate met the limits; nearest candidates:" in printed and "latency_ms by" in printed
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["recommended"] is None and pareto["front"] == []
    assert pareto["nearest"] and all(n["missed_by"]["latency_ms"] > 0 for n in pareto["nearest"])
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["ended"]) == {"infeasible-before-training"}
    assert trials["reason"].str.contains("latency_ms over its limit").all()
    assert not (out / "best").exists()


def test_a_run_directory_of_another_study_is_refused(tiny_task, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_command(tiny_task, out, 1, "--repeats", "3")) == 0
    assert main(_command(tiny_task, out, 1, "--repeats", "3", "--study", "other")) == 2
    assert "holds study 'local-search', not 'other'" in capsys.readouterr().err
    # Its trials' latencies were measured at sequence length 64, batch 1: resuming at another is mixing.
    assert main(_command(tiny_task, out, 2, "--repeats", "3", "--seq-len", "32", "--batch-size", "4")) == 2
    err = capsys.readouterr().err
    assert "measured with --batch-size 1 (now 4), --seq-len 64 (now 32)" in err and "pass the same options" in err
    assert main(_command(tiny_task, out, 2, "--repeats", "5")) == 0  # more repeats measure the same thing
    assert len(pd.read_csv(out / "trials.csv")) == 2


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_write_the_results_so_far(tiny_task, tmp_path, stop_signal):
    out = tmp_path / "run"
    worker, log = _start_stalling(_command(tiny_task, out, 50, "--repeats", "5"), tmp_path)
    signalled = time.time()
    os.kill(worker.pid, stop_signal)
    worker.wait(timeout=stalling_search.STALL_S)  # it stopped on the signal, not after the held trial
    stderr = log.read_text()
    assert worker.returncode == 130, stderr
    storage = f"sqlite:///{out / 'study.db'}"
    assert f"interrupted; results so far are in {out}" in stderr
    study = optuna.load_study(study_name="local-search", storage=storage)
    states = [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.RUNNING not in states and len(states) >= 3
    *finished, in_flight = study.get_trials()
    assert in_flight.number == 2 and in_flight.state == optuna.trial.TrialState.FAIL
    assert in_flight.user_attrs["ended"] == "interrupted"
    assert in_flight.user_attrs["reason"] == "interrupted by the user"
    assert all(t.user_attrs["ended"] in COUNTED for t in finished)
    # The results of what finished were written after the signal, the report included.
    for name in ("trials.csv", "pareto.json", "report.html"):
        assert (out / name).stat().st_mtime >= signalled - 1, name
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == len(states) and trials["ended"].iloc[-1] == "interrupted"
    assert set(trials["number"]) == {t.number for t in study.get_trials()}
    assert json.loads((out / "pareto.json").read_text())["baseline"]["test_accuracy"] > 0


# Runs the real command with two signals placed deterministically: SIGTERM in the middle of trial 2,
# then SIGINT either while that trial is being recorded as interrupted or while the results are
# being written. The second must end the process at once (before the patched step runs).
DOUBLE_SIGNAL_SCRIPT = """
import os, signal, sys
import optuna
from autocompress import cli
from autocompress.search import objective
from autocompress.study import results

run_trial, set_user_attr, write_tables = objective.InProcess.evaluate, optuna.Trial.set_user_attr, results.write_tables

def first_signal(self, trial, plan):
    if trial.number == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return run_trial(self, trial, plan)

def second_while_recording(self, key, value):
    if value == "interrupted":
        os.kill(os.getpid(), signal.SIGINT)
    return set_user_attr(self, key, value)

def second_while_writing(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return write_tables(*args, **kwargs)

objective.InProcess.evaluate = first_signal
if os.environ["SECOND_SIGNAL"] == "recording":
    optuna.Trial.set_user_attr = second_while_recording
else:
    results.write_tables = second_while_writing
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("second_signal", ["recording", "writing"])
def test_a_second_signal_exits_at_once_and_the_study_resumes(tiny_task, tmp_path, second_signal):
    out = tmp_path / "run"
    command = _command(tiny_task, out, 5, "--repeats", "3")
    worker = subprocess.run([sys.executable, "-c", DOUBLE_SIGNAL_SCRIPT, *command], capture_output=True,
                            text=True, env={**os.environ, "SECOND_SIGNAL": second_signal})
    assert worker.returncode == 130, worker.stderr
    assert "stopped at once; the study is intact" in worker.stderr
    assert not (out / "trials.csv").exists()  # it stopped before writing any result file
    storage = f"sqlite:///{out / 'study.db'}"
    trials = optuna.load_study(study_name="local-search", storage=storage).get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.user_attrs["ended"] in COUNTED for t in trials[:2])
    if second_signal == "recording":  # stopped before the interrupted trial was recorded: left RUNNING
        assert trials[2].state == optuna.trial.TrialState.RUNNING and "ended" not in trials[2].user_attrs
    else:
        assert trials[2].state == optuna.trial.TrialState.FAIL and trials[2].user_attrs["ended"] == "interrupted"

    assert main(command) == 0  # the same command resumes the same study
    study = optuna.load_study(study_name="local-search", storage=storage)
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.get_trials()]
    assert study.get_trials()[2].user_attrs["ended"] == "interrupted"
    assert {n: study.get_trials()[n].values for n in (0, 1)} == {t.number: t.values for t in trials[:2]}
    table = pd.read_csv(out / "trials.csv")
    assert (table["ended"] != "interrupted").sum() == 5 and (out / "pareto.json").is_file()


def test_a_search_measured_per_prompt_is_not_resumed_per_generated_token(tmp_path):
    from autocompress.errors import InputError
    from autocompress.measure import MeasureSettings
    from autocompress.search.resume import check_run_dir
    from autocompress.study.layout import RunLayout

    layout = RunLayout(tmp_path)
    # A run recorded before latency modes existed timed prompts.
    layout.run_json.write_text(json.dumps({"study": "s", "measure": {"batch_size": 1, "seq_len": 64, "threads": 2}}))
    check_run_dir(layout, "s", None, MeasureSettings(latency="prompt", repeats=99))
    with pytest.raises(InputError, match=r"--latency prompt \(now token\)"):
        check_run_dir(layout, "s", None, MeasureSettings(latency="token"))
    with pytest.raises(InputError, match=r"--threads 2 \(now 1\)"):
        check_run_dir(layout, "s", None, MeasureSettings(latency="prompt", threads=1))
