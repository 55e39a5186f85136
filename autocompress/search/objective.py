"""One trial: Optuna calls ``Objective``, which samples the plan, has it evaluated, and records how
the trial ended, in one place, whether the plan ran in this process or in a child process.

``evaluate_plan`` is a trial's work. Latency and memory do not depend on weight values, so a
candidate is measured right after its structure and post-training steps are built, before any
training; one that cannot meet the latency or memory limit ends there ("infeasible before
training") in seconds. The others are recovered (trained), scored and, when they meet every
limit, saved.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import optuna

from autocompress.deployment import save_deployment
from autocompress.measure import Measurement
from autocompress.model_io import save_candidate
from autocompress.search.environment import Candidate, Stopwatch, TrialEnvironment
from autocompress.search.sampling import sample_plan
from autocompress.search.trial_limits import trial_limits
from autocompress.study.limits import describe_gaps
from autocompress.study.record import (
    TEST_ACCURACY,
    VAL_ACCURACY,
    Ended,
    TrialOutcome,
    TrialRecorder,
    curve_of,
    objective_values,
)
from autocompress.technique import Plan, Stage


class TrialFailed(Exception):
    """A trial failed for a reason already put in words: the message is the whole reason."""


class PrunedTrial(optuna.TrialPruned):
    """The pruner stopped the trial; ``constraints`` are the limit gaps its last validation
    accuracy implies (see ``evaluate_plan``)."""

    def __init__(self, reason: str, constraints: Mapping[str, float]):
        super().__init__(reason)
        self.constraints = dict(constraints)


def failure_reason(exc: BaseException) -> str:
    """How a failed trial's reason reads in trials.csv."""
    return str(exc) if isinstance(exc, TrialFailed) else f"{type(exc).__name__}: {exc}"


class PlanEvaluator(Protocol):
    def evaluate(self, trial: optuna.Trial, plan: Plan) -> TrialOutcome:
        """Evaluate ``plan`` for ``trial``; raise when the trial stops before its end."""


class Objective:
    """What Optuna calls for each trial; returns the objective values (``OBJECTIVES`` order).

    Samples the plan with the trial (the sampler's state stays in this process), records it, has
    ``evaluator`` evaluate it (``InProcess`` by default; ``--isolate``: in a child process) and
    records how the trial ended: the outcome, or why it stopped (pruned, failed, interrupted).
    """

    def __init__(self, env: TrialEnvironment, evaluator: PlanEvaluator | None = None):
        self.env = env
        self.evaluator = evaluator or InProcess(env)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        record = TrialRecorder(trial)
        started = time.perf_counter()
        try:
            plan = sample_plan(trial, self.env.techniques, self.env.spaces)
            record.plan(plan.to_manifest())
            outcome = self.evaluator.evaluate(trial, plan)
            record.finished(outcome)
            return outcome.values
        except optuna.TrialPruned as exc:
            constraints = exc.constraints if isinstance(exc, PrunedTrial) else None
            record.stopped(Ended.PRUNED, str(exc) or "pruned", constraints)
            raise
        except KeyboardInterrupt:
            record.stopped(Ended.INTERRUPTED, "interrupted by the user")
            raise
        except Exception as exc:
            record.stopped(Ended.FAILED, failure_reason(exc))
            raise
        finally:
            # Wall time, an isolated trial's child start included: the real cost of the trial.
            record.duration(time.perf_counter() - started)


class InProcess:
    """Evaluates a trial's plan in the search process, under the in-process time and memory limits."""

    def __init__(self, env: TrialEnvironment):
        self.env = env

    def evaluate(self, trial: optuna.Trial, plan: Plan) -> TrialOutcome:
        with trial_limits(self.env.trial_timeout_s, self.env.trial_memory_mb):
            return evaluate_plan(self.env, trial, plan)


def evaluate_plan(env: TrialEnvironment, trial: Any, plan: Plan) -> TrialOutcome:
    """Build, measure, gate on the limits, recover, score and save: one trial's work.

    ``trial`` is an Optuna trial or a child process's forwarding one; what is learnt along the way
    (the measurement, the recovery curve, the work time) is recorded on it as it comes. Returns
    the outcome (complete, or infeasible before training); raises ``PrunedTrial`` when the pruner
    stops recovery, and whatever a technique raises.
    """
    record = TrialRecorder(trial)
    # work: applying, training, measuring, evaluating; bookkeeping inside it (pruning decisions,
    # storage writes) is the host's. work_s lets benchmarks/search_efficiency.py tell them apart.
    work, bookkeeping = Stopwatch(), Stopwatch()
    try:
        with work():
            candidate = env.build(plan, trial, bookkeeping)
            measurement, teacher_latency = env.measure(candidate, plan)
        record.measured(measurement.as_dict(), teacher_latency)
        gaps = env.limits.gaps(measurement.latency_ms, measurement.memory_mb)
        if any(gap > 0 for gap in gaps.values()):
            # Accuracy was not measured: 0.0 only tells the sampler this region is useless.
            values = objective_values({VAL_ACCURACY: 0.0, **measurement.as_dict()})
            return TrialOutcome(Ended.INFEASIBLE, values, gaps, describe_gaps(gaps))
        with work():
            record.latencies(env.latencies(candidate, plan, measurement))  # a model that generates: the other mode
            try:
                candidate = env.recover(candidate, plan)
            except optuna.TrialPruned as exc:
                raise PrunedTrial(str(exc) or "pruned", _pruned_gaps(env, trial, measurement)) from None
            # A recovery step that added parameters (soft-prompt rows) changed what is measured; an
            # unchanged structure is a cache hit (``TrialEnvironment.measure``), not a second timing.
            remeasured, teacher_latency = env.measure(candidate, plan)
            if remeasured is not measurement:
                measurement = remeasured
                record.measured(measurement.as_dict(), teacher_latency)
                record.latencies(env.latencies(candidate, plan, measurement))
            val_accuracy, test_accuracy = env.score(candidate)
            record.also_scored(env.also_scored(candidate))
        gaps = env.limits.gaps(measurement.latency_ms, measurement.memory_mb,
                               env.baseline.val_accuracy - val_accuracy)
        reason = describe_gaps(gaps)
        if not reason:
            _save(env, trial.number, candidate, plan, measurement, val_accuracy, test_accuracy)
        values = objective_values({VAL_ACCURACY: val_accuracy, **measurement.as_dict()})
        return TrialOutcome(Ended.COMPLETE, values, gaps, reason, val_accuracy, test_accuracy)
    finally:
        record.work_seconds(work.seconds - bookkeeping.seconds)


def _pruned_gaps(env: TrialEnvironment, trial: Any, measurement: Measurement) -> dict[str, float]:
    """The constraint values a pruned trial's last validation accuracy implies.

    A pruned multi-objective trial has no objective values, so without constraints the sampler
    learns nothing from it; with them, one pruned far below the accuracy limit counts as badly
    infeasible, and the sampler steers away from its region. Results ignore them: only a complete
    trial can be feasible (``TrialRecord.feasible``)."""
    curve = curve_of(trial)
    if not curve:
        return {}
    last = curve[max(curve)]
    return env.limits.gaps(measurement.latency_ms, measurement.memory_mb, env.baseline.val_accuracy - last)


def _save(env: TrialEnvironment, number: int, candidate: Candidate, plan: Plan, measurement: Measurement,
          val_accuracy: float, test_accuracy: float) -> None:
    """Keep a feasible candidate (``candidates/trial-NNNNN``): the float model, its post steps, its numbers."""
    directory = save_candidate(
        env.layout.candidate(number), candidate.model, candidate.context.tokenizer,
        post_steps=plan.to_manifest(Stage.POST),
        info={"trial": number, "plan": plan.to_manifest(), "measurement": measurement.as_dict(),
              VAL_ACCURACY: val_accuracy, TEST_ACCURACY: test_accuracy},
    )
    save_deployment(directory, candidate.deployed)  # e.g. static int8's calibration sample and float layers
