"""What each post-training step buys on this machine, measured before the first trial.

Which post step pays off depends on the CPU and the runtime, not on the model: int8 dynamic was
2.9x the teacher on an AMD EPYC and 1.5x on an Intel Xeon at batch 16, where bf16 was 3.9x
(DESIGN.md, section 5). So before the first trial of a new study the probe times the teacher
with each post step alone (the by-hand references of the POST-stage techniques, e.g. int8
dynamic, bf16, static int8) on the run's target, at the run's batch size and sequence length,
interleaved with the teacher itself (teacher, step 1, step 2, ..., teacher, ...) so drift of a
shared machine cancels. A step the target cannot run is recorded with the target's reason.

The probe then decides:

- ``adapt_starting_points``: the warm-start plans end in the step that was fastest here among
  those that keep the quality limit on their own (or in none, when no such step gains at least
  ``MIN_GAIN``), instead of always in int8. Whether a step keeps quality is read from its by-hand
  reference, which the search scores on validation before the probe (``quality_keeper``): int8
  dynamic was SmolLM2's fastest step (3.28x per token) and left its prompted accuracy at chance;
  starting every plan there made every trial of the LLM demo infeasible;
- ``restrict_spaces``: a categorical choice the target refuses (static int8 on the cpu target,
  bf16 on onnxruntime) is dropped from the search space, so no trial is spent failing on it.

The table is stored with the study (user attribute ``probe``) and shown in the report.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from optuna.distributions import CategoricalDistribution

from autocompress.errors import AutocompressError
from autocompress.search_space import SearchSpace
from autocompress.technique import ApplyContext, Plan, PlanStep, Stage, Technique

if TYPE_CHECKING:  # the report reads probes without loading torch
    from torch import nn

    from autocompress.measure import MeasureSettings, Target

PROBE_ATTR = "probe"
#: A post step must be at least this much faster than the teacher to end the starting points.
MIN_GAIN = 1.05
#: Interleaved rounds (teacher, each step) and timed runs per round.
ROUNDS = 3


@dataclass(frozen=True)
class ProbeRow:
    """One post step alone on the teacher: its latency beside the teacher's, or why it was refused."""

    label: str
    technique: str
    config: dict[str, Any]
    latency_ms: float | None = None
    teacher_latency_ms: float | None = None
    refused: str | None = None

    @property
    def speedup(self) -> float | None:
        if self.latency_ms is None or self.teacher_latency_ms is None:
            return None
        return self.teacher_latency_ms / self.latency_ms


@dataclass(frozen=True)
class Probe:
    """The probe's table for one target and measurement setting."""

    target: str
    batch_size: int
    seq_len: int
    threads: int
    rows: tuple[ProbeRow, ...] = field(default_factory=tuple)

    def best(self, technique: str, min_gain: float = MIN_GAIN, spaces: Mapping[str, SearchSpace] | None = None,
             keeps_quality: Callable[[ProbeRow], bool] | None = None) -> ProbeRow | None:
        """The fastest measured step of ``technique`` that beats the teacher by ``min_gain`` (and, with
        ``spaces``, whose values lie in the technique's search space; with ``keeps_quality``, that it
        accepts), or None."""
        measured = [r for r in self.rows if r.technique == technique and r.speedup is not None
                    and r.speedup >= min_gain and (spaces is None or _inside(r.config, spaces.get(technique, {})))
                    and (keeps_quality is None or keeps_quality(r))]
        return max(measured, key=lambda r: r.speedup) if measured else None

    def probed(self) -> set[str]:
        return {row.technique for row in self.rows}

    def as_dict(self) -> dict[str, Any]:
        rows = [{**asdict(row), "speedup": row.speedup} for row in self.rows]
        return {**asdict(self), "rows": rows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        rows = tuple(ProbeRow(**{k: v for k, v in row.items() if k != "speedup"}) for row in data["rows"])
        return cls(data["target"], data["batch_size"], data["seq_len"], data["threads"], rows)


def _inside(values: Mapping[str, Any], space: SearchSpace) -> bool:
    """Whether every searched field of ``values`` lies in ``space`` (fields not searched are free)."""
    for name, value in values.items():
        distribution = space.get(name)
        if distribution is None:
            continue
        try:
            if not distribution._contains(distribution.to_internal_repr(value)):
                return False
        except (TypeError, ValueError):
            return False
    return True


def post_variants(techniques: Sequence[type[Technique]]) -> list[tuple[type[Technique], str, dict[str, Any]]]:
    """(technique, label, config values) of every by-hand reference of the POST-stage techniques."""
    return [(cls, label, dict(values)) for cls in techniques if cls.stage == Stage.POST
            for label, values in cls.references.items()]


def run_probe(teacher: nn.Module, techniques: Sequence[type[Technique]], target: Target, settings: MeasureSettings,
              make_context: Callable[[nn.Module], ApplyContext], rounds: int = ROUNDS) -> Probe:
    """Time the teacher and each post step alone on ``target``, interleaved over ``rounds`` rounds."""
    from autocompress.candidate import deploy

    quick = replace(settings, repeats=max(3, settings.repeats // rounds))
    rows: list[ProbeRow] = []
    deployed: list[tuple[int, nn.Module]] = []
    for cls, label, values in post_variants(techniques):
        row = ProbeRow(label, cls.name, values)
        try:
            model = copy.deepcopy(teacher)
            plan = Plan.build([PlanStep(cls, cls.make_config(values))])
            candidate = deploy(model, plan, make_context(model))
            target.measure(candidate, replace(quick, repeats=1))  # conversion, compilation, first-run costs
            deployed.append((len(rows), candidate))
        except AutocompressError as exc:  # the target's own refusal
            row = replace(row, refused=str(exc))
        except Exception as exc:  # a probe never ends the search; the trials would fail the same way
            row = replace(row, refused=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    teacher_times: list[float] = []
    times: dict[int, list[float]] = {index: [] for index, _ in deployed}
    for _ in range(rounds):
        teacher_times.append(target.measure(teacher, quick).latency_ms)
        for index, candidate in deployed:
            times[index].append(target.measure(candidate, quick).latency_ms)
    teacher_ms = statistics.median(teacher_times)
    for index, timings in times.items():
        rows[index] = replace(rows[index], latency_ms=statistics.median(timings), teacher_latency_ms=teacher_ms)
    return Probe(target.name, settings.batch_size, settings.seq_len, settings.threads, tuple(rows))


def quality_keeper(references: Sequence[Mapping[str, Any]], teacher_val: float,
                   max_drop: float | None) -> Callable[[ProbeRow], bool]:
    """Whether a probed step keeps the quality limit on its own: its by-hand reference (same label and
    technique, ``by_hand_references``) lost at most ``max_drop`` of validation quality against the
    teacher's ``teacher_val``. A step without a scored reference, or any step without a limit, passes."""
    from autocompress.study.record import PLAN, VAL_ACCURACY

    dropped = {(ref["name"], step["technique"]) for ref in references
               if max_drop is not None and ref.get(VAL_ACCURACY) is not None
               and teacher_val - ref[VAL_ACCURACY] > max_drop for step in ref.get(PLAN, [])}

    def keeps(row: ProbeRow) -> bool:
        return (row.label, row.technique) not in dropped

    return keeps


def adapt_starting_points(plans: Sequence[Mapping[str, Mapping[str, Any]]], probe: Probe,
                          spaces: Mapping[str, SearchSpace], keeps_quality: Callable[[ProbeRow], bool] | None = None,
                          techniques: Mapping[str, type] | None = None) -> list[dict[str, dict[str, Any]]]:
    """The plans with each probed post step replaced by the step that was fastest here (among
    those inside ``spaces`` that ``keeps_quality`` accepts).

    The best step's fields override the plan's (other fields of the plan stay, but those the new
    step does not use, by its technique's ``conditions`` in ``techniques``, go: int8's
    ``embeddings`` when the step became int4); a plan whose post step gains nothing here loses it
    (and is dropped if nothing else is left); duplicates go.
    """
    adapted: list[dict[str, dict[str, Any]]] = []
    for plan in plans:
        new: dict[str, dict[str, Any]] = {}
        for name, fields in plan.items():
            if name not in probe.probed():
                new[name] = dict(fields)
                continue
            best = probe.best(name, spaces=spaces, keeps_quality=keeps_quality)
            if best is not None:
                merged = {**fields, **best.config}
                technique = (techniques or {}).get(name)
                new[name] = merged if technique is None else {
                    f: v for f, v in merged.items() if technique.uses_field(f, merged) is not False}
        if new and new not in adapted:
            adapted.append(new)
    return adapted


def refused_choices(probe: Probe) -> dict[str, dict[str, set[Any]]]:
    """technique -> field -> values only refused rows used (no measured row has that value)."""
    refused: dict[str, dict[str, set[Any]]] = {}
    for row in probe.rows:
        if row.refused is None:
            continue
        for field_name, value in row.config.items():
            measured = any(other.refused is None and other.technique == row.technique
                           and other.config.get(field_name) == value for other in probe.rows)
            if not measured:
                refused.setdefault(row.technique, {}).setdefault(field_name, set()).add(value)
    return refused


def restrict_spaces(spaces: Mapping[str, SearchSpace], probe: Probe) -> dict[str, SearchSpace]:
    """``spaces`` without the categorical choices the target refused (never emptying a choice)."""
    restricted = {name: dict(space) for name, space in spaces.items()}
    for technique, fields in refused_choices(probe).items():
        for field_name, values in fields.items():
            distribution = restricted.get(technique, {}).get(field_name)
            if not isinstance(distribution, CategoricalDistribution):
                continue
            kept = [choice for choice in distribution.choices if choice not in values]
            if kept and len(kept) < len(distribution.choices):
                restricted[technique][field_name] = CategoricalDistribution(kept)
    return restricted


def probe_study(study: Any, env: Any) -> Probe | None:
    """The study's probe: stored by the first worker, measured now for a study without trials, or
    None for a study that started before probes existed (its search space is fixed already)."""
    stored = study.user_attrs.get(PROBE_ATTR)
    if stored is not None:
        return Probe.from_dict(stored)
    from optuna.trial import TrialState

    # Trials queued but not started (starting points, enqueue_trial by hand) sample nothing yet.
    if any(trial.state != TrialState.WAITING for trial in study.get_trials(deepcopy=False)):
        return None
    probe = run_probe(env.task.teacher, env.techniques, env.target, env.measure_settings, env.context)
    study.set_user_attr(PROBE_ATTR, probe.as_dict())
    return probe
