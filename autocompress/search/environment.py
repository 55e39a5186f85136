"""What every trial of a run shares, and the steps a plan goes through on the way to a result.

``TrialEnvironment`` holds the loaded task, the encoded evaluation sets, the teacher's baseline,
the target and the limits. Its ``build`` -> ``measure`` -> ``recover`` -> ``score`` are the one
way a plan becomes a measured, scored candidate: a trial uses them (with the feasibility gate
between measuring and recovering), and so do the by-hand references (``by_hand_references``),
which skip recovery.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from torch import nn

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps, deploy, structure_key
from autocompress.errors import InputError
from autocompress.measure import Measurement, MeasureSettings, Target
from autocompress.metrics import Accuracy, QualityMetric
from autocompress.registry import Registry
from autocompress.search.fidelity import make_pruner, should_prune
from autocompress.search.settings import SearchSettings
from autocompress.search_space import SearchSpace, load_overrides
from autocompress.study.layout import RunLayout
from autocompress.study.limits import Limits
from autocompress.study.record import Baseline, TrialRecorder, reference_record
from autocompress.task import LoadedTask
from autocompress.technique import ApplyContext, ModelAndTokenizer, Plan, PlanStep, Stage, Technique
from autocompress.training import Encoded, encode


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


@dataclass
class Candidate:
    """A plan applied to a copy of the teacher: the float model (what is trained and saved), its
    deployed form (post-training steps applied: what is measured and scored) and their context."""

    model: nn.Module
    deployed: nn.Module
    context: ApplyContext


@dataclass(frozen=True)
class LeftOut:
    """A technique the search leaves out because it does not support the model, and why."""

    technique: str
    reason: str

    def notice(self) -> str:
        """The one line the search prints about it."""
        return f"note: technique '{self.technique}' is left out of this search: {self.reason}"


def supported_techniques(techniques: list[type[Technique]], model: ModelAndTokenizer, named: bool
                         ) -> tuple[list[type[Technique]], list[LeftOut]]:
    """The techniques that support ``model``, and those left out with why.

    ``named``: the user chose these techniques (``--techniques``), so one that cannot run is an
    InputError naming it and its reason; otherwise (every registered technique) it is left out.
    """
    kept: list[type[Technique]] = []
    left_out: list[LeftOut] = []
    for cls in techniques:
        reason = cls.unsupported_reason_for(model)
        if not reason:
            kept.append(cls)
        elif named:
            raise InputError(f"technique '{cls.name}' does not support this model: {reason}")
        else:
            left_out.append(LeftOut(cls.name, reason))
    return kept, left_out


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
    #: The techniques searched: those asked for that support the model (see ``left_out``).
    techniques: list[type[Technique]]
    spaces: Mapping[str, SearchSpace]
    architectures: Registry
    layout: RunLayout
    #: Techniques of the default search (no ``--techniques``) left out because they do not support the model.
    left_out: list[LeftOut] = field(default_factory=list)
    seed: int = 0
    max_length: int = 64
    pruner: optuna.pruners.BasePruner | None = None
    trial_timeout_s: float | None = None
    trial_memory_mb: float | None = None
    measurements: dict[str, tuple[Measurement, float]] = field(default_factory=dict)
    #: Latency modes timed besides ``measure_settings.latency`` (a model that generates is timed both
    #: ways: ``other_latency_modes``), and their medians per structure key.
    other_latencies: tuple[str, ...] = ()
    other_measurements: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Replaces the local pruning decision (trial, curve) -> prune?; an isolated trial's child asks its parent.
    prune_decision: Callable[[Any, dict[int, float]], bool] | None = None

    def decide_prune(self, trial: Any, curve: dict[int, float]) -> bool:
        if self.prune_decision is not None:
            return self.prune_decision(trial, curve)
        return self.pruner is not None and should_prune(self.pruner, trial.study, trial, curve)

    def teacher_and_tokenizer(self) -> ModelAndTokenizer:
        """The teacher and its tokenizer, as a technique is asked whether it supports them."""
        return ModelAndTokenizer(adapter_for(self.task.teacher, self.architectures), self.task.tokenizer)

    def context(self, model: nn.Module, trial: Any = None, bookkeeping: Stopwatch | None = None) -> ApplyContext:
        """The context techniques work in; with a ``trial``, recovery's curve is recorded and may prune it."""
        bookkeeping = bookkeeping or Stopwatch()

        def report(step: int, value: float) -> None:
            # The curve is kept with the trial; the pruner decides on it (see search/fidelity.py).
            if trial is None:
                return
            with bookkeeping():
                curve = TrialRecorder(trial).curve_point(step, value)
                prune = self.decide_prune(trial, curve)
            if prune:
                raise optuna.TrialPruned(f"pruned at step {step} (validation {self.task.metric.name} {value:.4f})")

        return ApplyContext(
            adapter=adapter_for(model, self.architectures),
            tokenizer=self.task.tokenizer,
            data=self.task.data,
            teacher=self.task.teacher,
            max_length=self.max_length,
            seed=self.seed,
            report=report,
            quality=self.task.metric.score,
        )

    def evaluation_sets(self, tokenizer: Any) -> tuple[Encoded, Encoded]:
        """Validation and test sets tokenised by ``tokenizer`` (a technique may have rewritten it)."""
        if tokenizer is self.task.tokenizer:
            return self.validation, self.test
        data = self.task.data
        limit = len(self.validation), len(self.test)
        return (encode(tokenizer, data.validation.head(limit[0]), self.max_length),
                encode(tokenizer, data.test.head(limit[1]), self.max_length))

    def build(self, plan: Plan, trial: Any = None, bookkeeping: Stopwatch | None = None) -> Candidate:
        """The plan's structure steps on a copy of the teacher, and its deployed form."""
        model = copy.deepcopy(self.task.teacher)
        context = self.context(model, trial, bookkeeping)
        model = apply_steps(model, plan.at(Stage.STRUCTURE), context)
        return Candidate(model, deploy(model, plan, context), context)

    def recover(self, candidate: Candidate, plan: Plan) -> Candidate:
        """The plan's recovery steps (training) on a built candidate, and the new deployed form."""
        recover = plan.at(Stage.RECOVER)
        if not recover:
            return candidate
        context = candidate.context
        context.adapter = adapter_for(candidate.model, self.architectures)
        model = apply_steps(candidate.model, recover, context)
        return Candidate(model, deploy(model, plan, context), context)

    def measure(self, candidate: Candidate, plan: Plan) -> tuple[Measurement, float]:
        """The candidate's measurement and the teacher's latency measured right before it.

        Shared machines drift over minutes; the side-by-side teacher figure makes each trial's
        speed-up honest even when the run-start baseline was measured in a busier moment.
        An identical structure (same shapes, dtypes, post steps) is measured once per run.
        """
        key = structure_key(candidate.model, plan, f"{self.target.name}:{self.measure_settings}")
        if key not in self.measurements:
            teacher = self.target.measure(self.task.teacher, self.measure_settings)
            self.measurements[key] = (self.target.measure(candidate.deployed, self.measure_settings),
                                      teacher.latency_ms)
        return self.measurements[key]

    def latencies(self, candidate: Candidate, plan: Plan, measurement: Measurement) -> dict[str, float]:
        """Every latency mode timed (mode -> median ms): the searched one (``measurement``) and
        ``other_latencies``, each timed once per structure. Empty when the run times one mode."""
        if not self.other_latencies:
            return {}
        key = structure_key(candidate.model, plan, f"{self.target.name}:{self.measure_settings}")
        if key not in self.other_measurements:
            self.other_measurements[key] = timed_latencies(self.target, candidate.deployed, self.measure_settings,
                                                           self.other_latencies)
        return {self.measure_settings.latency or "prompt": measurement.latency_ms, **self.other_measurements[key]}

    def score(self, candidate: Candidate) -> tuple[float, float]:
        """The task's metric (accuracy by default) on validation and test, of what the target runs (and measured)."""
        validation, test = self.evaluation_sets(candidate.context.tokenizer)
        scored = self.target.runtime(candidate.deployed)
        return self.task.metric.score(scored, validation), self.task.metric.score(scored, test)

    def also_scored(self, candidate: Candidate) -> dict[str, float]:
        """The task's other metrics (``QualityMetric.also_recorded``) on the test split, by name."""
        others = self.task.metric.also_recorded()
        if not others:
            return {}
        test = self.evaluation_sets(candidate.context.tokenizer)[1]
        scored = self.target.runtime(candidate.deployed)
        return {metric.name: metric.score(scored, test) for metric in others}


def resolve_techniques(host: Any, names: tuple[str, ...] | None) -> list[type]:
    """The technique classes ``--techniques`` names (all registered ones when None)."""
    if names is None:
        return [entry.cls for entry in host.techniques]
    unknown = [n for n in names if n not in host.techniques]
    if unknown:
        raise InputError(
            f"unknown technique(s) {', '.join(unknown)} (valid: {', '.join(host.techniques.names())})"
        )
    return [host.techniques[n] for n in names]


def technique_spaces(host: Any, settings: SearchSettings) -> tuple[list[type], dict[str, Any]]:
    """The techniques to search and their search spaces (with ``--search-space`` overrides)."""
    techniques = resolve_techniques(host, settings.techniques)
    spaces = {cls.name: cls.search_space() for cls in techniques}
    if settings.search_space_file is not None:
        # Checked against every registered technique: one file can serve runs with different --techniques.
        overrides = load_overrides(settings.search_space_file, {entry.name: entry.cls for entry in host.techniques})
        for name, fields in overrides.items():
            if name in spaces:
                spaces[name] = {**spaces[name], **fields}
    return techniques, spaces


def other_latency_modes(target: Target, teacher: nn.Module, settings: MeasureSettings) -> tuple[str, ...]:
    """The latency modes the run times besides ``settings.latency``: for a model that generates (a
    causal LM, or a causal LM made a prompted classifier) both the prompt and the time per generated
    token matter to its user, so whichever is not searched is timed beside it, when the target times
    it; a classifier that cannot generate has only its forward pass."""
    from autocompress.prompted import prompt_of

    generates = prompt_of(teacher) is not None or (
        callable(getattr(teacher, "get_output_embeddings", None)) and teacher.get_output_embeddings() is not None)
    if not generates:
        return ()
    searched = settings.latency or "prompt"
    return tuple(mode for mode in target.latency_modes if mode != searched)


def timed_latencies(target: Target, model: nn.Module, settings: MeasureSettings,
                    modes: tuple[str, ...]) -> dict[str, float]:
    """``model``'s median latency in each of ``modes`` (mode -> ms), timed by ``target``."""
    return {mode: target.measure(model, dataclasses.replace(settings, latency=mode)).latency_ms for mode in modes}


def measure_baseline(teacher: nn.Module, target: Target, settings: MeasureSettings, validation: Encoded,
                     test: Encoded, metric: QualityMetric | None = None) -> Baseline:
    """The teacher's quality (``metric``, accuracy by default; scored on the target's runtime) and
    measurement; with every latency mode timed (``other_latency_modes``) when it generates."""
    metric = metric or Accuracy()
    scored = target.runtime(teacher)
    measurement = target.measure(teacher, settings)
    others = other_latency_modes(target, teacher, settings)
    latencies = ({settings.latency or "prompt": measurement.latency_ms,
                  **timed_latencies(target, teacher, settings, others)} if others else {})
    return Baseline(metric.score(scored, validation), metric.score(scored, test), measurement.as_dict(), latencies)


def make_environment(settings: SearchSettings, host: Any, task: LoadedTask, techniques: list[type],
                     spaces: dict[str, Any], baseline_for: Callable[[Target, Encoded, Encoded], Baseline]
                     ) -> TrialEnvironment:
    """What every trial shares, from the loaded task. ``baseline_for(target, validation, test)``
    gives the teacher's baseline: measured once per study by the search process, read back from
    the study by an isolated trial's child process (which builds its environment with this too).

    Each technique is first asked whether it supports the teacher and its tokenizer, before the
    baseline is measured: one the user named (``--techniques``) that does not is an InputError;
    otherwise it is left out of the search (``TrialEnvironment.left_out``), and of ``spaces``."""
    teacher = ModelAndTokenizer(adapter_for(task.teacher, host.architectures), task.tokenizer)
    techniques, left_out = supported_techniques(techniques, teacher, named=settings.techniques is not None)
    spaces = {cls.name: spaces[cls.name] for cls in techniques}
    target = host.targets[settings.target]()
    max_length = settings.task_options.max_length
    data = task.data
    limit = settings.eval_limit or max(len(data.validation), len(data.test))
    validation = encode(task.tokenizer, data.validation.head(limit), max_length)
    test = encode(task.tokenizer, data.test.head(limit), max_length)
    return TrialEnvironment(
        task=task, validation=validation, test=test, baseline=baseline_for(target, validation, test),
        target=target, measure_settings=settings.measure, limits=settings.limits, techniques=techniques,
        spaces=spaces, architectures=host.architectures, layout=settings.layout,
        seed=settings.seed, max_length=max_length, pruner=make_pruner(settings.pruner),
        trial_timeout_s=settings.trial_timeout_s, trial_memory_mb=settings.trial_memory_mb, left_out=left_out,
        other_latencies=other_latency_modes(target, task.teacher, settings.measure),
    )


def by_hand_references(env: TrialEnvironment, host: Any) -> list[dict[str, Any]]:
    """The simple baselines techniques offer (e.g. int8 alone), each built, scored and measured the
    way a trial is, without recovery training. One that cannot run is reported, never fatal."""
    rows = []
    teacher = env.teacher_and_tokenizer()
    for entry in host.techniques:
        unsupported = entry.cls.unsupported_reason_for(teacher) if entry.cls.references else None
        for label, values in entry.cls.references.items():
            plan = Plan.build([PlanStep(entry.cls, entry.cls.make_config(values))])
            if unsupported:
                rows.append(reference_record(label, plan.to_manifest(),
                                             error=f"does not support this model: {unsupported}"))
                continue
            try:
                candidate = env.build(plan)
                val_accuracy, test_accuracy = env.score(candidate)
                measurement, _ = env.measure(candidate, plan)
            except Exception as exc:
                rows.append(reference_record(label, plan.to_manifest(), error=f"{type(exc).__name__}: {exc}"))
                continue
            rows.append(reference_record(label, plan.to_manifest(), val_accuracy, test_accuracy,
                                         measurement.as_dict()))
    return rows
