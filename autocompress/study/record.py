"""The trial record: how a trial ended, the study's objectives, and every attribute a trial stores.

A trial's user attributes are written through ``TrialRecorder`` and read back by
``TrialRecord.from_trial``, nowhere else: the search writes them; the report, the export, the
pruner, the observers and the CLI read them. The plan is stored as data (technique, version and
config of each step) and described for display from that data; no display string is parsed back.

Validation accuracy is what the search optimises and the limits are checked on; test accuracy is
what the report shows. They are named apart everywhere: ``val_accuracy`` and ``test_accuracy``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna


class Ended(str, enum.Enum):
    """How a trial ended; stored as the user attribute ``ended`` and shown in trials.csv."""

    COMPLETE = "complete"
    INFEASIBLE = "infeasible-before-training"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def meaning(self) -> str:
        """The state in words, for the report."""
        return _MEANINGS[self]

    @property
    def counts_toward_budget(self) -> bool:
        """Whether a trial that ended so used up the budget: a trial cut short by a stopped or dead
        process did not run to its own end (one left running is retried on resume)."""
        return self is not Ended.INTERRUPTED


_MEANINGS = {
    Ended.COMPLETE: "trained, evaluated and measured",
    Ended.INFEASIBLE: "rejected before training (missed a latency/memory limit when measured)",
    Ended.PRUNED: "stopped early by the pruner (weak validation accuracy during recovery)",
    Ended.FAILED: "failed (error recorded; the search went on)",
    Ended.INTERRUPTED: "cut short (process stopped; retried on resume)",
}


@dataclass(frozen=True)
class StudyObjective:
    """One objective of the study: its metric name (also the trials.csv column) and direction."""

    name: str
    direction: str  # "maximize" or "minimize"
    label: str  # in words, for plots and tables

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` for this objective."""
        return a > b if self.direction == "maximize" else a < b


#: The study's objectives, in the order of Optuna's values. Everything that needs them (the
#: study's directions and metric names, Pareto dominance, importances) reads this tuple.
OBJECTIVES = (
    StudyObjective("val_accuracy", "maximize", "validation accuracy"),
    StudyObjective("latency_ms", "minimize", "latency"),
    StudyObjective("memory_mb", "minimize", "memory"),
)
DIRECTIONS = tuple(objective.direction for objective in OBJECTIVES)
METRIC_NAMES = tuple(objective.name for objective in OBJECTIVES)


def objective_values(values: Mapping[str, float]) -> tuple[float, ...]:
    """The objective values Optuna receives, in ``OBJECTIVES`` order, from a mapping by name."""
    return tuple(float(values[objective.name]) for objective in OBJECTIVES)


def quality_name(run_record: Mapping[str, Any]) -> str:
    """The metric a run's ``val_accuracy`` / ``test_accuracy`` hold (run.json ``quality_metric``;
    runs before plugin API 1.6 measured accuracy)."""
    return str(run_record.get("quality_metric") or "accuracy")


def dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Pareto dominance on ``OBJECTIVES``: ``a`` is nowhere worse than ``b`` and somewhere better."""
    not_worse = all(not o.better(b[o.name], a[o.name]) for o in OBJECTIVES)
    return not_worse and any(o.better(a[o.name], b[o.name]) for o in OBJECTIVES)


# User attributes of a trial. Only this module spells them.
PLAN = "plan"
ENDED = "ended"
REASON = "reason"
VAL_ACCURACY = "val_accuracy"
TEST_ACCURACY = "test_accuracy"
TEACHER_LATENCY = "teacher_latency_ms"
#: The latency of every mode timed (``MeasureSettings.latency``: prompt, token), the searched one
#: included, when the run times more than one (a model that generates): mode -> median ms.
LATENCIES = "latency_ms_by_mode"
SPEEDUP = "speedup"
DURATION = "duration_s"
WORK = "work_s"
CURVE = "intermediate"
PRUNER_STATE = "pruner_state"
RETRY_OF = "retry_of"
STARTING_POINT = "starting_point"
#: The measurement's fields (``autocompress.measure.Measurement``), each stored as its own attribute.
MEASURED = ("latency_ms", "latency_p90_ms", "memory_mb", "model_mb", "activation_mb", "parameters")

# User attributes of the study.
BASELINE = "baseline"
REFERENCES = "references"
RUN = "run"
LAST_RUN_SECONDS = "last_run_seconds"


@dataclass(frozen=True)
class StepRecord:
    """One step of a stored plan: the technique, its version and its config as data."""

    technique: str
    version: str
    config: Mapping[str, Any]
    #: Fields of ``config`` the step does not use (``Plan.to_manifest``), left out of its description.
    unused: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> StepRecord:
        return cls(str(entry["technique"]), str(entry.get("version", "")), dict(entry.get("config") or {}),
                   tuple(str(name) for name in entry.get("unused") or ()))

    def describe(self) -> str:
        values = ", ".join(f"{name}={value}" for name, value in self.config.items() if name not in self.unused)
        return f"{self.technique}({values})"

    def as_manifest(self) -> dict[str, Any]:
        """The step as ``Plan.to_manifest`` writes it (JSON-ready)."""
        return {"technique": self.technique, "version": self.version, "config": dict(self.config),
                **({"unused": list(self.unused)} if self.unused else {})}


def describe_plan(steps: Sequence[StepRecord]) -> str:
    """``a(x=1) -> b(y=2)``: the plan in one line, for trials.csv and messages."""
    return " -> ".join(step.describe() for step in steps) or "no compression"


def steps_of(manifest: Sequence[Mapping[str, Any]]) -> tuple[StepRecord, ...]:
    """A plan manifest (``Plan.to_manifest()``) as step records."""
    return tuple(StepRecord.from_manifest(entry) for entry in manifest)


@dataclass(frozen=True)
class Baseline:
    """The teacher as the run measured it: validation and test accuracy, and its measurement."""

    val_accuracy: float
    test_accuracy: float
    measured: Mapping[str, float]  #: ``MEASURED`` keys
    #: Every latency mode timed (``LATENCIES``); empty when the run times one.
    latencies: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        values = {VAL_ACCURACY: self.val_accuracy, TEST_ACCURACY: self.test_accuracy, **self.measured}
        return {**values, LATENCIES: dict(self.latencies)} if self.latencies else values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        return cls(data[VAL_ACCURACY], data[TEST_ACCURACY], {key: data[key] for key in MEASURED},
                   dict(data.get(LATENCIES) or {}))


def reference_record(name: str, manifest: list[dict[str, Any]], val_accuracy: float | None = None,
                     test_accuracy: float | None = None, measured: Mapping[str, float] | None = None,
                     error: str | None = None) -> dict[str, Any]:
    """A by-hand baseline (e.g. int8 alone) as stored in the study: its result, or why it could not run."""
    record: dict[str, Any] = {"name": name, PLAN: manifest}
    if error is not None:
        record["error"] = error
        return record
    return {**record, VAL_ACCURACY: val_accuracy, TEST_ACCURACY: test_accuracy, **(measured or {})}


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial's evaluation returns when it runs to its end: complete, or infeasible before
    training. The objective records it; a stopped trial (pruned, failed) raises instead."""

    ended: Ended
    values: tuple[float, ...]  #: in ``OBJECTIVES`` order
    constraints: Mapping[str, float]  #: <= 0 means the limit is met
    reason: str = ""
    val_accuracy: float | None = None
    test_accuracy: float | None = None


def curve_of(trial: Any) -> dict[int, float]:
    """The validation-accuracy curve recorded during recovery: step -> accuracy."""
    return {int(step): float(value) for step, value in (trial.user_attrs.get(CURVE) or {}).items()}


class TrialRecorder:
    """Writes a trial's record. ``trial`` is an Optuna trial or anything with its ``user_attrs``,
    ``set_user_attr`` and ``set_constraint``: a child process's trial that forwards every write to
    the search process, or a stored trial being repaired."""

    def __init__(self, trial: Any):
        self.trial = trial

    def plan(self, manifest: list[dict[str, Any]]) -> None:
        """The plan, as data (``Plan.to_manifest()``)."""
        self.trial.set_user_attr(PLAN, manifest)

    def measured(self, measured: Mapping[str, float], teacher_latency_ms: float) -> None:
        """The candidate's measurement and the teacher's latency measured beside it."""
        for key in MEASURED:
            self.trial.set_user_attr(key, measured[key])
        self.trial.set_user_attr(TEACHER_LATENCY, teacher_latency_ms)
        self.trial.set_user_attr(SPEEDUP, teacher_latency_ms / measured["latency_ms"])

    def latencies(self, by_mode: Mapping[str, float]) -> None:
        """Every latency mode timed (mode -> median ms), when the run times more than one."""
        if by_mode:
            self.trial.set_user_attr(LATENCIES, dict(by_mode))

    def curve_point(self, step: int, value: float) -> dict[int, float]:
        """Add a point to the validation-accuracy curve; returns the curve so far."""
        curve = {str(k): v for k, v in curve_of(self.trial).items()}
        curve[str(step)] = value
        self.trial.set_user_attr(CURVE, curve)
        return {int(k): v for k, v in curve.items()}

    def pruner_state(self, state: Mapping[str, Any]) -> None:
        """What a pruner remembers about this trial (see ``autocompress.search.fidelity``)."""
        self.trial.set_user_attr(PRUNER_STATE, dict(state))

    def work_seconds(self, seconds: float) -> None:
        """Time spent building, training, measuring and evaluating, without the host's bookkeeping."""
        self.trial.set_user_attr(WORK, round(seconds, 4))

    def duration(self, seconds: float) -> None:
        self.trial.set_user_attr(DURATION, round(seconds, 3))

    def finished(self, outcome: TrialOutcome) -> None:
        """A trial that ran to its end: its constraints, accuracies and how it ended."""
        for key, value in outcome.constraints.items():
            self.trial.set_constraint(key, value)
        if outcome.val_accuracy is not None:
            self.trial.set_user_attr(VAL_ACCURACY, outcome.val_accuracy)
        if outcome.test_accuracy is not None:
            self.trial.set_user_attr(TEST_ACCURACY, outcome.test_accuracy)
        self.trial.set_user_attr(ENDED, outcome.ended.value)
        if outcome.reason:
            self.trial.set_user_attr(REASON, outcome.reason)

    def also_scored(self, scores: Mapping[str, float]) -> None:
        """Test-split figures of metrics recorded beside the optimised one (``QualityMetric.also_recorded``),
        by metric name: trial attribute ``test_<name>``."""
        for name, value in scores.items():
            self.trial.set_user_attr(f"test_{name}", value)

    def stopped(self, ended: Ended, reason: str, constraints: Mapping[str, float] | None = None) -> None:
        """A trial stopped before its end (pruned, failed, interrupted) and why."""
        for key, value in (constraints or {}).items():
            self.trial.set_constraint(key, value)
        self.trial.set_user_attr(ENDED, ended.value)
        self.trial.set_user_attr(REASON, reason)


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


#: trials.csv's columns before the sampled parameters (``param.<name>``).
COLUMNS = ["number", "state", ENDED, PLAN, TEST_ACCURACY, VAL_ACCURACY, "latency_ms", "latency_p90_ms", SPEEDUP,
           TEACHER_LATENCY, "memory_mb", "model_mb", "activation_mb", "parameters", "feasible", REASON, DURATION,
           WORK]


@dataclass(frozen=True)
class TrialRecord:
    """A stored trial as everything downstream reads it."""

    number: int
    state: str  #: Optuna's state name (COMPLETE, PRUNED, FAIL, RUNNING, ...)
    ended: Ended | None  #: None while the trial runs
    steps: tuple[StepRecord, ...] | None  #: None when it stopped before its plan was chosen
    params: Mapping[str, Any]
    val_accuracy: float | None
    test_accuracy: float | None
    measured: Mapping[str, float | None]  #: ``MEASURED`` keys; None where not measured
    teacher_latency_ms: float | None
    speedup: float | None
    feasible: bool  #: complete and within every limit
    reason: str
    duration_s: float | None
    work_s: float | None
    curve: Mapping[int, float] = field(default_factory=dict)
    #: Every latency mode timed (``LATENCIES``); empty when the run times one.
    latencies: Mapping[str, float] = field(default_factory=dict)

    @property
    def plan(self) -> str:
        """The plan in one line ("" when no plan was chosen)."""
        return "" if self.steps is None else describe_plan(self.steps)

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        if ENDED in attrs:
            ended: Ended | None = Ended(attrs[ENDED])
        elif trial.state == optuna.trial.TrialState.FAIL:
            ended = Ended.INTERRUPTED  # failed without a recorded end: its process died mid-trial
        else:
            ended = None
        complete = trial.state == optuna.trial.TrialState.COMPLETE and ended is Ended.COMPLETE
        plan = attrs.get(PLAN)
        return cls(
            number=trial.number,
            state=trial.state.name,
            ended=ended,
            steps=None if plan is None else steps_of(plan),
            params=dict(trial.params),
            val_accuracy=attrs.get(VAL_ACCURACY),
            test_accuracy=attrs.get(TEST_ACCURACY),
            measured={key: attrs.get(key) for key in MEASURED},
            teacher_latency_ms=attrs.get(TEACHER_LATENCY),
            speedup=attrs.get(SPEEDUP),
            feasible=bool(complete and all(v <= 0 for v in trial.constraints.values())),
            reason=attrs.get(REASON, ""),
            duration_s=attrs.get(DURATION),
            work_s=attrs.get(WORK),
            curve=curve_of(trial),
            latencies=dict(attrs.get(LATENCIES) or {}),
        )

    def row(self) -> dict[str, Any]:
        """The trial as one trials.csv row (``COLUMNS``, then ``latency_ms.<mode>`` per latency mode timed
        when the run times more than one, then ``param.<name>`` per sampled parameter);
        also the ``outcome`` observers receive."""
        row: dict[str, Any] = {
            "number": self.number,
            "state": self.state,
            ENDED: self.ended.value if self.ended is not None else self.state.lower(),
            PLAN: self.plan,
            TEST_ACCURACY: self.test_accuracy,
            VAL_ACCURACY: self.val_accuracy,
            **{key: _number(self.measured.get(key)) for key in MEASURED},
            SPEEDUP: self.speedup,
            TEACHER_LATENCY: self.teacher_latency_ms,
            "feasible": self.feasible,
            REASON: self.reason,
            DURATION: self.duration_s,
            WORK: self.work_s,
        }
        ordered = {column: row[column] for column in COLUMNS}
        ordered.update({f"latency_ms.{mode}": value for mode, value in self.latencies.items()})
        ordered.update({f"param.{name}": value for name, value in self.params.items()})
        return ordered


#: The ``ended`` values of trials that used up the budget (see ``Ended.counts_toward_budget``).
COUNTED = tuple(ended.value for ended in Ended if ended.counts_toward_budget)
