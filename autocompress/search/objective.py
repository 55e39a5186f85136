"""One trial: sample a plan, build the structure, measure, gate on the limits, recover, evaluate.

Latency and memory do not depend on weight values, so a candidate is measured right after its
structure and post-training steps are built, before any training. A candidate that cannot meet
the latency or memory limit ends there ("infeasible before training") in seconds.
"""

from __future__ import annotations

import copy
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from torch import nn

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps, deploy, structure_key
from autocompress.deployment import save_deployment
from autocompress.measure import Measurement, MeasureSettings, Target
from autocompress.model_io import save_candidate
from autocompress.registry import Registry
from autocompress.search.fidelity import should_prune
from autocompress.search.settings import Limits
from autocompress.search_space import SearchSpace
from autocompress.task import LoadedTask
from autocompress.technique import ApplyContext, Plan, PlanStep, Stage, Technique
from autocompress.training import Encoded, accuracy, encode

# Why a trial ended; stored as the user attribute "ended" and shown in trials.csv.
COMPLETE = "complete"
INFEASIBLE = "infeasible-before-training"
PRUNED = "pruned"
FAILED = "failed"
INTERRUPTED = "interrupted"

CONSTRAINTS = ("latency_ms", "memory_mb", "accuracy_drop")


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high,
                                 step=distribution.step, log=distribution.log)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high,
                                   step=distribution.step, log=distribution.log)
    raise TypeError(f"unsupported distribution {distribution!r} for {name}")


def conflict_groups(techniques: list[type[Technique]]) -> list[list[type[Technique]]]:
    """Techniques linked by declared conflicts (either direction), each group ordered by stage, name."""
    names = {cls.name: cls for cls in techniques}
    group_of = {name: {name} for name in names}
    for cls in techniques:
        for other in cls.conflicts & names.keys():
            merged = group_of[cls.name] | group_of[other]
            for name in merged:
                group_of[name] = merged
    groups = {frozenset(g) for g in group_of.values()}
    ordered = [sorted((names[n] for n in g), key=lambda c: (c.stage, c.name)) for g in groups]
    return sorted(ordered, key=lambda g: (g[0].stage, g[0].name))


def sample_plan(trial: optuna.Trial, techniques: list[type[Technique]], spaces: Mapping[str, SearchSpace]) -> Plan:
    """Choose which techniques are on and their parameters.

    A technique alone is switched by ``use.<name>`` (true/false). Techniques that conflict are
    one choice, ``use.<a>|<b>`` in {none, a, b}, so each gets an equal share of trials and a
    conflicting pair is never even sampled.
    """
    steps: list[PlanStep] = []
    chosen: set[str] = set()
    for group in conflict_groups(techniques):
        if len(group) == 1:
            picked = group[0] if trial.suggest_categorical(f"use.{group[0].name}", [True, False]) else None
        else:
            names = [cls.name for cls in group]
            choice = trial.suggest_categorical(f"use.{'|'.join(names)}", ["none", *names])
            picked = next((cls for cls in group if cls.name == choice), None)
        if picked is None or not picked.requires <= chosen:
            continue
        values = {f: suggest(trial, f"{picked.name}.{f}", d) for f, d in spaces[picked.name].items()}
        steps.append(PlanStep(picked, picked.make_config(values)))
        chosen.add(picked.name)
    return Plan.build(steps)


@dataclass(frozen=True)
class Baseline:
    val_accuracy: float
    test_accuracy: float
    measurement: Measurement

    def as_dict(self) -> dict[str, Any]:
        return {"val_accuracy": self.val_accuracy, "accuracy": self.test_accuracy, **self.measurement.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        fields = {k: data[k] for k in Measurement.__dataclass_fields__}
        return cls(data["val_accuracy"], data["accuracy"], Measurement(**fields))


@dataclass
class TrialEnvironment:
    """What every trial of one run shares (read-only apart from the measurement cache)."""

    task: LoadedTask
    validation: Encoded
    test: Encoded
    baseline: Baseline
    target: Target
    measure_settings: MeasureSettings
    limits: Limits
    techniques: list[type[Technique]]
    spaces: Mapping[str, SearchSpace]
    architectures: Registry
    candidates_dir: Path
    seed: int = 0
    max_length: int = 64
    pruner: optuna.pruners.BasePruner | None = None
    trial_timeout_s: float | None = None
    trial_memory_mb: float | None = None
    measurements: dict[str, tuple[Measurement, float]] = field(default_factory=dict)
    #: Replaces the local pruning decision (trial, curve) -> prune?; an isolated trial's child asks its parent.
    prune_decision: Callable[[Any, dict[int, float]], bool] | None = None

    def decide_prune(self, trial: Any, curve: dict[int, float]) -> bool:
        if self.prune_decision is not None:
            return self.prune_decision(trial, curve)
        return self.pruner is not None and should_prune(self.pruner, trial.study, trial, curve)

    def context(self, model: nn.Module, trial: optuna.Trial | None = None,
                bookkeeping: Stopwatch | None = None) -> ApplyContext:
        bookkeeping = bookkeeping or Stopwatch()

        def report(step: int, value: float) -> None:
            # The curve is kept with the trial; the pruner decides on it (see search/fidelity.py).
            if trial is None:
                return
            with bookkeeping():
                curve = dict(trial.user_attrs.get("intermediate", {}))
                curve[str(step)] = value
                trial.set_user_attr("intermediate", curve)
                prune = self.decide_prune(trial, {int(k): v for k, v in curve.items()})
            if prune:
                raise optuna.TrialPruned(f"pruned at step {step} (validation accuracy {value:.4f})")

        return ApplyContext(
            adapter=adapter_for(model, self.architectures),
            tokenizer=self.task.tokenizer,
            data=self.task.data,
            teacher=self.task.teacher,
            max_length=self.max_length,
            seed=self.seed,
            report=report,
        )

    def evaluation_sets(self, tokenizer: Any) -> tuple[Encoded, Encoded]:
        """Validation and test sets tokenised by ``tokenizer`` (a technique may have rewritten it)."""
        if tokenizer is self.task.tokenizer:
            return self.validation, self.test
        data = self.task.data
        limit = len(self.validation), len(self.test)
        return (encode(tokenizer, data.validation.head(limit[0]), self.max_length),
                encode(tokenizer, data.test.head(limit[1]), self.max_length))

    def measure(self, deployed: nn.Module, plan: Plan, structure: nn.Module) -> tuple[Measurement, float]:
        """The candidate's measurement and the teacher's latency measured right before it.

        Shared machines drift over minutes; the side-by-side teacher figure makes each trial's
        speed-up honest even when the run-start baseline was measured in a busier moment.
        An identical structure (same shapes, dtypes, post steps) is measured once per run.
        """
        key = structure_key(structure, plan, f"{self.target.name}:{self.measure_settings}")
        if key not in self.measurements:
            teacher = self.target.measure(self.task.teacher, self.measure_settings)
            self.measurements[key] = (self.target.measure(deployed, self.measure_settings), teacher.latency_ms)
        return self.measurements[key]


def limit_gaps(limits: Limits, measurement: Measurement, accuracy_drop: float | None) -> dict[str, float]:
    """Constraint values (<= 0 means the limit is met) for every limit the user set."""
    gaps = {}
    if limits.max_latency_ms is not None:
        gaps["latency_ms"] = measurement.latency_ms - limits.max_latency_ms
    if limits.max_memory_mb is not None:
        gaps["memory_mb"] = measurement.memory_mb - limits.max_memory_mb
    if limits.max_accuracy_drop is not None and accuracy_drop is not None:
        gaps["accuracy_drop"] = accuracy_drop - limits.max_accuracy_drop
    return gaps


def describe_gaps(gaps: Mapping[str, float]) -> str:
    missed = [f"{name} over its limit by {value:.4g}" for name, value in gaps.items() if value > 0]
    return "; ".join(missed)


class Stopwatch:
    """Accumulates the seconds spent inside ``with stopwatch():`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started


class TrialTimeout(Exception):
    """A trial ran past ``--trial-timeout``."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TrialTimeout in the main thread after ``seconds`` (checked between Python bytecodes,
    so a long native operation finishes first). No limit when ``seconds`` is None."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TrialTimeout(f"trial exceeded the per-trial time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class TrialMemoryExceeded(Exception):
    """A trial's process memory grew past ``--trial-memory-mb``."""


MEMORY_SIGNAL = signal.SIGUSR1
MEMORY_POLL_S = 0.1


@contextmanager
def memory_limit(megabytes: float | None, poll_s: float = MEMORY_POLL_S) -> Iterator[None]:
    """Raise TrialMemoryExceeded in the main thread once the process's resident memory has grown
    by more than ``megabytes`` since entry. No limit when ``megabytes`` is None.

    A watchdog thread samples the resident set size every ``poll_s`` seconds and, on excess,
    signals the main thread (SIGUSR1), whose handler raises. Limits, as with ``time_limit``: the
    exception is raised between Python bytecodes, so a long native operation finishes first, and
    a single allocation larger than the cap has already happened when it is detected (the trial
    then fails and its memory is freed). Growth is that of the whole process, and memory the
    allocator keeps after freeing counts until it is returned to the system.
    """
    if megabytes is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    import psutil

    process = psutil.Process()
    start = process.memory_info().rss
    cap = megabytes * 2**20
    grown: list[float] = []
    stop = threading.Event()
    main_thread = threading.main_thread().ident

    def watch() -> None:
        while not stop.wait(poll_s):
            growth = process.memory_info().rss - start
            if growth > cap:
                grown.append(growth / 2**20)
                signal.pthread_kill(main_thread, MEMORY_SIGNAL)
                return

    def exceeded(signum, frame):
        raise TrialMemoryExceeded(f"trial exceeded the per-trial memory limit of {megabytes:g} MB "
                                  f"(process memory grew by {grown[0]:.0f} MB during the trial)")

    previous = signal.signal(MEMORY_SIGNAL, exceeded)
    watchdog = threading.Thread(target=watch, name="trial-memory-watchdog", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        try:
            stop.set()
            watchdog.join()
        finally:
            # A signal not yet handled by now comes too late to matter: the trial is over.
            signal.signal(MEMORY_SIGNAL, previous)


@contextmanager
def trial_limits(seconds: float | None, megabytes: float | None) -> Iterator[None]:
    """The in-process per-trial limits: ``time_limit`` and ``memory_limit`` together."""
    with time_limit(seconds), memory_limit(megabytes):
        yield


class Objective:
    """The function Optuna calls for each trial; returns (accuracy, latency_ms, memory_mb)."""

    def __init__(self, env: TrialEnvironment):
        self.env = env

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        return self.execute(trial)

    def execute(self, trial: Any, plan: Plan | None = None,
                limits: AbstractContextManager | None = None) -> tuple[float, float, float]:
        """Run one trial and record how it ended. ``plan`` None: sample it from ``trial``.
        ``limits`` replaces the in-process time and memory limits (an isolated trial's child
        brings its own); ``trial`` is an Optuna trial or anything with the same recording methods."""
        started = time.perf_counter()
        try:
            if plan is None:
                plan = sample_plan(trial, self.env.techniques, self.env.spaces)
                trial.set_user_attr("plan", plan.describe())
                trial.set_user_attr("manifest", plan.to_manifest())
            if limits is None:
                limits = trial_limits(self.env.trial_timeout_s, self.env.trial_memory_mb)
            with limits:
                return self._run(trial, plan)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("ended", PRUNED)
            trial.set_user_attr("reason", str(exc) or "pruned")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("ended", INTERRUPTED)
            trial.set_user_attr("reason", "interrupted by the user")
            raise
        except Exception as exc:
            trial.set_user_attr("ended", FAILED)
            trial.set_user_attr("reason", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            trial.set_user_attr("duration_s", round(time.perf_counter() - started, 3))

    def _run(self, trial: optuna.Trial, plan: Plan) -> tuple[float, float, float]:
        # work: applying, training, measuring, evaluating; bookkeeping inside it (pruning decisions,
        # storage writes) is the host's. work_s lets benchmarks/search_efficiency.py tell them apart.
        work, bookkeeping = Stopwatch(), Stopwatch()
        try:
            return self._work(trial, plan, work, bookkeeping)
        finally:
            trial.set_user_attr("work_s", round(work.seconds - bookkeeping.seconds, 4))

    def _constrain_pruned(self, trial: optuna.Trial, measurement: Measurement) -> None:
        """Give a pruned trial the constraint values its last validation accuracy implies.

        A pruned multi-objective trial has no objective values, so without constraints the sampler
        learns nothing from it; with them, one pruned far below the accuracy limit counts as badly
        infeasible, and the sampler steers away from its region. Results ignore them: only a
        complete trial can be feasible (search/results.py)."""
        curve = trial.user_attrs.get("intermediate") or {}
        if not curve:
            return
        last = curve[max(curve, key=int)]
        for key, value in limit_gaps(self.env.limits, measurement, self.env.baseline.val_accuracy - last).items():
            trial.set_constraint(key, value)

    def _work(self, trial: optuna.Trial, plan: Plan, work: Stopwatch, bookkeeping: Stopwatch
              ) -> tuple[float, float, float]:
        env = self.env
        with work():
            student = copy.deepcopy(env.task.teacher)
            context = env.context(student, trial, bookkeeping)
            student = apply_steps(student, plan.at(Stage.STRUCTURE), context)
            deployed = deploy(student, plan, context)
            measurement, teacher_latency = env.measure(deployed, plan, student)
        for key, value in measurement.as_dict().items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("teacher_latency_ms", teacher_latency)
        trial.set_user_attr("speedup", teacher_latency / measurement.latency_ms)

        gaps = limit_gaps(env.limits, measurement, None)
        if any(v > 0 for v in gaps.values()):
            for key, value in gaps.items():
                trial.set_constraint(key, value)
            trial.set_user_attr("ended", INFEASIBLE)
            trial.set_user_attr("reason", describe_gaps(gaps))
            # Accuracy was not measured: 0.0 only tells the sampler this region is useless.
            return 0.0, measurement.latency_ms, measurement.memory_mb

        recover = plan.at(Stage.RECOVER)
        with work():
            if recover:
                context.adapter = adapter_for(student, env.architectures)
                try:
                    student = apply_steps(student, recover, context)
                except optuna.TrialPruned:
                    self._constrain_pruned(trial, measurement)
                    raise
                deployed = deploy(student, plan, context)
            validation, test = env.evaluation_sets(context.tokenizer)
            scored = env.target.runtime(deployed)  # accuracy of what the target runs and measured
            val_accuracy = accuracy(scored, validation)
            test_accuracy = accuracy(scored, test)
        drop = env.baseline.val_accuracy - val_accuracy
        gaps = limit_gaps(env.limits, measurement, drop)
        for key, value in gaps.items():
            trial.set_constraint(key, value)
        trial.set_user_attr("val_accuracy", val_accuracy)
        trial.set_user_attr("accuracy", test_accuracy)
        trial.set_user_attr("ended", COMPLETE)
        if any(v > 0 for v in gaps.values()):
            trial.set_user_attr("reason", describe_gaps(gaps))
        else:
            directory = save_candidate(
                env.candidates_dir / f"trial-{trial.number:05d}", student, context.tokenizer,
                post_steps=plan.to_manifest(Stage.POST),
                info={"trial": trial.number, "plan": plan.to_manifest(), "measurement": measurement.as_dict(),
                      "val_accuracy": val_accuracy, "accuracy": test_accuracy},
            )
            save_deployment(directory, deployed)  # e.g. static int8's calibration sample and float layers
        return val_accuracy, measurement.latency_ms, measurement.memory_mb

