"""The stored study's one owner: the trial record written and read in one place, the objectives,
the limits' gaps, and the results computed from records (real in-memory Optuna studies)."""

import dataclasses
import math

import optuna
import pytest

from autocompress.measure import Measurement
from autocompress.plugin_manager import build_host
from autocompress.study import results
from autocompress.study.layout import RunLayout
from autocompress.study.limits import Limits, describe_gaps
from autocompress.study.record import (
    COLUMNS,
    COUNTED,
    DIRECTIONS,
    LATENCIES,
    MEASURED,
    METRIC_NAMES,
    OBJECTIVES,
    Baseline,
    Ended,
    StepRecord,
    TrialOutcome,
    TrialRecord,
    TrialRecorder,
    dominates,
    objective_values,
)
from autocompress.technique import Plan, PlanStep

BASELINE = Baseline(0.9, 0.88, {"latency_ms": 10.0, "latency_p90_ms": 11.0, "memory_mb": 100.0, "model_mb": 90.0,
                                "activation_mb": 10.0, "parameters": 1000})


def _measured(latency, memory):
    return {**BASELINE.measured, "latency_ms": latency, "memory_mb": memory}


def _study():
    return optuna.create_study(directions=list(DIRECTIONS))


def _complete(study, plan_manifest, latency, memory, val, test, limits=None):
    """A trial recorded the way the objective records a complete one."""
    trial = study.ask({"use.x": optuna.distributions.CategoricalDistribution([True, False])})
    record = TrialRecorder(trial)
    record.plan(plan_manifest)
    record.measured(_measured(latency, memory), teacher_latency_ms=10.0)
    gaps = (limits or Limits()).gaps(latency, memory, BASELINE.val_accuracy - val)
    values = objective_values({"val_accuracy": val, "latency_ms": latency, "memory_mb": memory})
    record.finished(TrialOutcome(Ended.COMPLETE, values, gaps, describe_gaps(gaps), val, test))
    record.duration(1.5)
    study.tell(trial, list(values))
    return trial.number


def test_the_measurement_fields_are_the_records_fields():
    assert MEASURED == tuple(f.name for f in dataclasses.fields(Measurement))


def test_objectives_drive_directions_metric_names_and_values():
    assert DIRECTIONS == ("maximize", "minimize", "minimize")
    assert METRIC_NAMES == ("val_accuracy", "latency_ms", "memory_mb")
    assert objective_values({"memory_mb": 3, "val_accuracy": 0.5, "latency_ms": 2, "test_accuracy": 9}) == (0.5, 2, 3)
    better = {"val_accuracy": 0.9, "latency_ms": 5, "memory_mb": 50}
    assert dominates(better, {**better, "latency_ms": 6}) and not dominates({**better, "latency_ms": 6}, better)
    assert not dominates(better, better)  # equal on every objective: neither dominates
    assert not dominates(better, {**better, "val_accuracy": 0.95, "latency_ms": 4})
    assert [o.name for o in OBJECTIVES] == list(METRIC_NAMES)


def test_every_way_a_trial_ends_has_a_meaning_and_only_interrupted_ones_are_retried_outside_the_budget():
    assert {e.value for e in Ended} == {"complete", "infeasible-before-training", "pruned", "failed", "interrupted"}
    assert all(e.meaning for e in Ended)
    assert set(COUNTED) == {e.value for e in Ended} - {"interrupted"}


def test_a_trial_written_through_the_recorder_reads_back_as_the_same_record():
    study = _study()
    quantization = build_host(autoload=False).techniques["quantization"]
    plan = Plan.build([PlanStep(quantization, quantization.make_config({"dtype": "int8"}))])
    number = _complete(study, plan.to_manifest(), 4.0, 40.0, val=0.895, test=0.87)
    record = TrialRecord.from_trial(study.trials[number])
    assert record.ended is Ended.COMPLETE and record.state == "COMPLETE" and record.feasible
    assert record.steps == (StepRecord("quantization", quantization.version,
                                       dataclasses.asdict(quantization.make_config({"dtype": "int8"}))),)
    assert record.plan.startswith("quantization(dtype=int8, ") and record.plan == plan.describe()  # one format
    assert (record.val_accuracy, record.test_accuracy) == (0.895, 0.87)
    assert record.measured["latency_ms"] == 4.0 and record.speedup == pytest.approx(2.5)
    row = record.row()
    assert list(row)[: len(COLUMNS)] == COLUMNS and row["param.use.x"] in (True, False)
    assert row["test_accuracy"] == 0.87 and row["val_accuracy"] == 0.895 and row["ended"] == "complete"
    assert not any(column.startswith("latency_ms.") for column in row)  # timed one way only
    timed_one_way, timed_both = study.ask(), study.ask()
    TrialRecorder(timed_one_way).latencies({})  # nothing recorded for a model timed one way
    TrialRecorder(timed_both).latencies({"prompt": 4.0, "token": 1.5})
    assert "latency_ms_by_mode" not in timed_one_way.user_attrs
    study.tell(timed_both, [0.9, 4.0, 40.0][: len(DIRECTIONS)])
    row = TrialRecord.from_trial(study.trials[timed_both.number]).row()
    assert (row["latency_ms.prompt"], row["latency_ms.token"]) == (4.0, 1.5)


def test_a_baseline_keeps_every_latency_mode_timed_through_its_dict():
    measured = dict.fromkeys(MEASURED, 1.0)
    both = Baseline(0.9, 0.8, measured, {"prompt": 1.0, "token": 0.4})
    assert Baseline.from_dict(both.as_dict()) == both
    one = Baseline(0.9, 0.8, measured)
    assert LATENCIES not in one.as_dict() and Baseline.from_dict(one.as_dict()) == one


def test_stopped_running_and_dead_trials_read_as_such():
    study = _study()
    pruned = study.ask()
    TrialRecorder(pruned).stopped(Ended.PRUNED, "pruned at step 3", {"accuracy_drop": 0.2})
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    dead = study.ask()  # failed without a recorded end: its process died
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    running = study.ask()
    records = results.trial_records(study)
    assert [r.ended for r in records] == [Ended.PRUNED, Ended.INTERRUPTED, None]
    assert records[0].reason == "pruned at step 3" and not records[0].feasible
    assert records[2].row()["ended"] == "running" and records[2].steps is None and records[2].plan == ""
    assert running.number == 2


def test_limit_gaps_are_one_computation_with_optunas_sign():
    limits = Limits(max_latency_ms=5.0, max_memory_mb=None, max_accuracy_drop=0.01)
    assert limits.gaps(7.0, 999.0, 0.0) == {"latency_ms": 2.0, "accuracy_drop": -0.01}
    assert limits.gaps(4.0) == {"latency_ms": -1.0}  # accuracy not known yet: no accuracy gap
    assert limits.gaps(float("nan"), 1.0, None) == {}
    assert describe_gaps({"latency_ms": 2.0, "accuracy_drop": -0.01}) == "latency_ms over its limit by 2"


def test_front_recommendation_and_nearest_candidates_from_records():
    limits = Limits(max_latency_ms=6.0)
    study = _study()
    fast = _complete(study, [], 3.0, 80.0, val=0.895, test=0.88, limits=limits)
    small = _complete(study, [], 5.0, 20.0, val=0.895, test=0.88, limits=limits)
    _complete(study, [], 5.5, 90.0, val=0.895, test=0.88, limits=limits)  # dominated by both
    _complete(study, [], 9.0, 10.0, val=0.9, test=0.9, limits=limits)  # misses the latency limit
    records = results.trial_records(study)
    assert [r.number for r in results.pareto_front(records)] == [fast, small]
    assert results.recommend(records, "latency").number == fast
    assert results.recommend(records, "memory").number == small
    document = results.pareto_document(records, BASELINE.as_dict(), limits, "latency")
    assert document["recommended"] == fast and [f["trial"] for f in document["front"]] == [fast, small]
    assert document["front"][0]["steps"] == [] and "nearest" not in document

    impossible = Limits(max_latency_ms=1.0)
    nearest = results.nearest_candidates(records, impossible, BASELINE)
    assert [n["trial"] for n in nearest] == [fast, small, 2]
    assert nearest[0]["missed_by"] == {"latency_ms": 2.0} and math.isclose(nearest[0]["test_accuracy"], 0.88)


def test_the_run_layout_names_every_file_once(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.candidate(7) == tmp_path / "candidates" / "trial-00007"
    for number in (3, 12):
        layout.candidate(number).mkdir(parents=True)
    (layout.candidates / "trial-notanumber").mkdir()
    assert layout.saved_candidates() == {3: layout.candidate(3), 12: layout.candidate(12)}
    assert layout.default_storage_url == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    assert layout.plot("progress").relative_to(tmp_path).as_posix() == "plots/progress.png"
