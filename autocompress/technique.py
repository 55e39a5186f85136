"""The contract every compression technique implements, and the plan that orders them.

A technique is one class: a ``name``, a typed ``Config`` dataclass (defaults, and
``__post_init__`` checks that raise ``ValueError`` with a readable message), a ``stage``, a
``search_space()`` (Optuna distributions; by default read from ``search_spaces/<name>.yaml``)
and ``apply(model, config, context) -> model``. Techniques may declare ``conflicts`` and
``requires`` (other technique names); a plan that breaks them is rejected before any work.

A structure technique owns the structure it changes: it declares a ``State`` dataclass (what
``apply`` decided: kept layers, kept token ids, widths...), hands one to ``context.record(state)``
from ``apply``, and implements ``rebuild(model, config, state, context) -> model``, which redoes the
change on a model built from the configuration the step started from, without data (the weights
are loaded afterwards). ``autocompress.structure`` keeps the record with the model and replays it
on load; the save/load code knows no layer shapes and no technique's keys. A recovery technique
that adds parameters (``prompt_tuning``'s soft-prompt rows) does the same (plugin API 1.8).
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from autocompress.errors import InputError, PluginError
from autocompress.search_space import SearchSpace, builtin_space_file, check_space, parse_space, read_yaml

if TYPE_CHECKING:
    import torch
    from torch import nn

    from autocompress.arch import ArchitectureAdapter
    from autocompress.data import TaskData


class Stage(enum.IntEnum):
    """Where a technique runs in a plan. Plans are ordered by stage, whatever the registration order."""

    STRUCTURE = 1  # changes shapes: what is measured for latency and memory
    RECOVER = 2  # trains the compressed student (does not change latency or memory)
    POST = 3  # post-training transforms such as quantization; always last


def no_report(step: int, value: float) -> None:
    """``ApplyContext.report`` when nobody listens (a technique applied outside a search): ignores
    the value. A recovery technique that finds ``context.report is no_report`` need not compute it."""


@dataclass
class ApplyContext:
    """What a technique may use besides the model, and what structure steps tell later steps.

    The tokenizer may be replaced (vocabulary trimming). ``token_map`` and ``layer_origin`` say how
    the student relates to the teacher, in general terms, so that whatever feeds or compares with
    the teacher (distillation) needs to know no technique: a step that changes token ids or layers
    sets them, composing with what an earlier step set.

    When a structure step's model is rebuilt on load (``Technique.rebuild``), ``data`` and
    ``teacher`` are None and ``tokenizer`` is the saved (final) tokenizer.
    """

    adapter: ArchitectureAdapter
    tokenizer: Any
    data: TaskData | None = None
    teacher: nn.Module | None = None
    max_length: int = 64
    seed: int = 0
    #: Recovery techniques call ``report(step, validation_accuracy)``; it may raise
    #: ``optuna.TrialPruned`` to stop a weak trial early. ``no_report`` (the default, outside a
    #: search): nobody listens, so a recovery technique may skip computing the accuracy.
    report: Callable[[int, float], None] = no_report
    #: How the figure ``report`` takes is computed: the task's metric (``QualityMetric.score``,
    #: model and encoded split -> float). None: accuracy. Added in plugin API 1.6.
    quality: Callable[[Any, Any], float] | None = None
    #: Student token id -> teacher token id (a LongTensor indexed by student ids), when they differ;
    #: ``token_map[input_ids]`` turns student inputs into teacher inputs. None: the same ids.
    token_map: torch.Tensor | None = None
    #: The teacher layer each student layer came from (one index per student layer), when a step
    #: removed or reordered layers. None: layer ``i`` is teacher layer ``i``.
    layer_origin: list[int] | None = None
    _recorded: list[Any] = field(default_factory=list, init=False, repr=False)
    _extras: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def record(self, state: Any) -> None:
        """Record what a structure technique's ``apply`` decided: an instance of its ``State``.

        Called once by ``apply`` when it changed the model (not at all when it changed nothing);
        saved with the model and handed back to ``rebuild`` on load.
        """
        self._recorded.append(state)

    def take_recorded(self) -> list[Any]:
        """The states recorded since the last call (``autocompress.candidate.apply_steps`` reads them)."""
        recorded, self._recorded = self._recorded, []
        return recorded

    @property
    def extras(self) -> dict[str, Any]:
        """Deprecated since plugin API 1.3 (removed in 2.0): nothing reads it; use the typed fields."""
        from autocompress.hookspecs import PluginDeprecationWarning

        warnings.warn(PluginDeprecationWarning(
            "ApplyContext.extras is deprecated since plugin API 1.3 and nothing reads it; use the typed fields "
            "(token_map, layer_origin) and Technique.State / context.record(state)"), stacklevel=2)
        return self._extras


@dataclass(frozen=True)
class ModelAndTokenizer:
    """What a technique is asked to support: a model (through its architecture adapter) and the
    tokenizer it comes with (``Technique.unsupported_reason_for``)."""

    adapter: ArchitectureAdapter
    #: The model's tokenizer (a transformers tokenizer, slow or fast).
    tokenizer: Any

    @property
    def model(self) -> nn.Module:
        """The model itself (``adapter.model``)."""
        return self.adapter.model


class Technique(ABC):
    """Base class of every technique. Subclasses set the class attributes and implement ``apply``."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    Config: ClassVar[type]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    conflicts: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()
    #: Simple by-hand baselines this technique offers (label -> Config values). Each is applied
    #: alone to the teacher, without recovery training, evaluated and measured once per run; the
    #: report marks them beside the searched candidates ("does the search beat int8 alone?").
    references: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Fields that matter only for some values of another field: field -> {other field: the values under
    #: which it is used}. Such a field is drawn by the search and may be fixed by a plan only when it
    #: is used; otherwise it keeps its ``Config`` default (plan descriptions leave it out). The other
    #: fields must be unconditional.
    #: E.g. quantization's ``group_size`` is used only when ``dtype`` is int4. Added in plugin API 1.8.
    conditions: ClassVar[Mapping[str, Mapping[str, tuple[Any, ...]]]] = {}
    #: Structure techniques: a dataclass of JSON values recording what ``apply`` decided, enough for
    #: ``rebuild`` to redo the change without data (kept layer indices, per-layer widths, ...).
    #: ``apply`` hands one to ``context.record(state)``; it is saved in the candidate's manifest.
    State: ClassVar[type | None] = None

    @classmethod
    def search_space(cls) -> SearchSpace:
        """Default search space: the packaged ``search_spaces/<name>.yaml``. Override to declare in code."""
        path = builtin_space_file(cls.name)
        if path is None:
            raise PluginError(
                f"technique '{cls.name}' declares no search space: add search_spaces/{cls.name}.yaml "
                f"or override {cls.__name__}.search_space()"
            )
        return parse_space(read_yaml(path) or {}, cls, str(path))

    @classmethod
    def uses_field(cls, field_name: str, values: Mapping[str, Any]) -> bool | None:
        """Whether ``field_name`` is used under ``values`` (some of the Config's fields; ``conditions``).
        None when a field its condition names is not in ``values`` (not decided yet)."""
        condition = cls.conditions.get(field_name)
        if not condition:
            return True
        if any(other not in values for other in condition):
            return None
        return all(values[other] in allowed for other, allowed in condition.items())

    @classmethod
    def make_config(cls, values: Mapping[str, Any]) -> Any:
        """Build a Config from sampled or user values; bad values raise InputError naming the technique."""
        known = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = set(values) - known
        if unknown:
            raise InputError(
                f"technique '{cls.name}': unknown field(s) {', '.join(sorted(unknown))} "
                f"(fields: {', '.join(sorted(known))})"
            )
        try:
            return cls.Config(**values)
        except (TypeError, ValueError) as exc:
            raise InputError(f"technique '{cls.name}': {exc}") from None

    @classmethod
    def unsupported_reason(cls, adapter: ArchitectureAdapter) -> str | None:
        """Why this technique cannot run on the model behind ``adapter``, or None when it can.

        Override it when the model alone decides; when the tokenizer matters too, override
        ``unsupported_reason_for`` instead (the host asks that one).
        """
        return None

    @classmethod
    def unsupported_reason_for(cls, model: ModelAndTokenizer) -> str | None:
        """Why this technique cannot run on ``model`` (the model and the tokenizer it comes with), or None.

        What the host asks before a search (and the contract kit, per family): decide from what the
        model and its tokenizer are (e.g. the tokenizer's algorithm); a family name says nothing
        about the tokenizer. The default asks ``unsupported_reason(model.adapter)``, so techniques
        written before this method existed keep working (plugin API 1.3).
        """
        return cls.unsupported_reason(model.adapter)

    @classmethod
    def make_state(cls, values: Mapping[str, Any]) -> Any:
        """The ``State`` saved as ``values`` (JSON); InputError naming the technique when it does not fit."""
        if cls.State is None:
            raise InputError(f"technique '{cls.name}' declares no State, yet a state was saved for it")
        try:
            return cls.State(**values)
        except (TypeError, ValueError) as exc:
            raise InputError(f"technique '{cls.name}': the saved state does not fit its State "
                             f"({cls.State.__name__}): {exc}") from None

    @abstractmethod
    def apply(self, model: nn.Module, config: Any, context: ApplyContext) -> nn.Module:
        """Return the transformed model (may modify ``model`` in place and return it).

        A structure technique with a ``State`` calls ``context.record(state)`` when it changed the
        model. Changes to ``model.config`` are recorded by the host and replayed on load.
        """

    def rebuild(self, model: nn.Module, config: Any, state: Any, context: ApplyContext) -> nn.Module:
        """Redo this step's structural change on ``model`` without data, from the recorded ``state``.

        Called when a saved candidate is loaded: ``model`` is built from the configuration the step
        started from (earlier steps already rebuilt), in any weights; the saved weights are loaded
        strictly afterwards, so only module types, shapes and ties (shared modules) matter. Return
        the model. Config changes ``apply`` made are replayed by the host after this call. Called
        only when ``apply`` recorded a state, or with ``state=None`` when the technique declares no
        ``State`` but overrides this method.

        Techniques that declare neither (plugin API <= 1.2) are rebuilt by the deprecated
        inference from saved tensor shapes (``autocompress.arch.match_saved_shapes``).
        """
        return model

    @classmethod
    def rebuilds_structure(cls) -> bool:
        """Whether this technique implements the structure contract (overrides ``rebuild``)."""
        return cls.rebuild is not Technique.rebuild


def validate_technique_class(cls: type) -> None:
    """Check a class against the contract; raise PluginError on the first problem."""
    who = f"technique {cls.__name__}"
    if not (isinstance(cls, type) and issubclass(cls, Technique)):
        raise PluginError(f"{who} does not subclass autocompress.technique.Technique")
    if not isinstance(getattr(cls, "stage", None), Stage):
        raise PluginError(f"{who} has no 'stage' (one of {', '.join(s.name.lower() for s in Stage)})")
    config = getattr(cls, "Config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise PluginError(f"{who} has no dataclass 'Config'")
    try:
        config()
    except Exception as exc:  # a default Config must exist so a technique can run with no tuning
        raise PluginError(f"{who}: Config() with defaults fails: {exc}") from None
    state = getattr(cls, "State", None)
    if state is not None:
        if not dataclasses.is_dataclass(state):
            raise PluginError(f"{who}: 'State' must be a dataclass (JSON-serialisable fields)")
        if cls.stage == Stage.POST:
            raise PluginError(f"{who}: a post step records no State (it is re-applied from its config on load); "
                              "only structure and recovery techniques do")
        if not cls.rebuilds_structure():
            raise PluginError(f"{who} declares a State but does not implement rebuild(model, config, state, "
                              "context): saved candidates could not be reloaded")
    fields = {f.name for f in dataclasses.fields(config)}
    for field_name, condition in cls.conditions.items():
        named = {field_name, *condition} - fields
        if named:
            raise PluginError(f"{who}: conditions name {', '.join(sorted(named))}, not fields of its Config")
        chained = set(condition) & set(cls.conditions)
        if chained:
            raise PluginError(f"{who}: the condition of '{field_name}' names {', '.join(sorted(chained))}, which is "
                              "conditional itself; a condition may name only unconditional fields")
        if not all(isinstance(allowed, tuple) and allowed for allowed in condition.values()):
            raise PluginError(f"{who}: the condition of '{field_name}' must map fields to non-empty tuples of values")
    # A YAML space is checked as it is parsed; one built in code is checked here.
    check_space(cls.search_space(), cls, f"{cls.__name__}.search_space()")
    for label, values in cls.references.items():
        try:
            cls.make_config(values)
        except InputError as exc:
            raise PluginError(f"{who}: reference '{label}': {exc}") from None


@dataclass(frozen=True)
class PlanStep:
    technique: type[Technique]
    config: Any

    def unused_fields(self) -> tuple[str, ...]:
        """The config's fields this step does not use (``Technique.conditions``: quantization's int4 group
        size when the dtype is int8)."""
        values = dataclasses.asdict(self.config)
        return tuple(name for name in values if self.technique.uses_field(name, values) is False)

    def describe(self) -> str:
        """``name(field=value, ...)``, the unused fields left out: ``quantization(dtype=int8, embeddings=False)``."""
        unused = self.unused_fields()
        shown = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.config).items() if k not in unused)
        return f"{self.technique.name}({shown})"


@dataclass(frozen=True)
class Plan:
    """Techniques of one trial, ordered by stage then name."""

    steps: tuple[PlanStep, ...]

    @classmethod
    def build(cls, steps: Sequence[PlanStep]) -> Plan:
        names = [s.technique.name for s in steps]
        if len(set(names)) != len(names):
            raise InputError(f"a plan lists a technique twice: {names}")
        chosen = set(names)
        for step in steps:
            clash = step.technique.conflicts & chosen
            if clash:
                raise InputError(
                    f"technique '{step.technique.name}' conflicts with {', '.join(sorted(clash))}"
                )
            missing = step.technique.requires - chosen
            if missing:
                raise InputError(
                    f"technique '{step.technique.name}' requires {', '.join(sorted(missing))}"
                )
        ordered = sorted(steps, key=lambda s: (s.technique.stage, s.technique.name))
        return cls(tuple(ordered))

    def at(self, stage: Stage) -> list[PlanStep]:
        return [s for s in self.steps if s.technique.stage == stage]

    def describe(self) -> str:
        return " -> ".join(s.describe() for s in self.steps) or "no compression"

    def to_manifest(self, stage: Stage | None = None) -> list[dict[str, Any]]:
        """The steps (of one stage, or all) as JSON-ready dicts: technique, version, config (and ``unused``:
        the config's fields the step does not use, when it has any, which descriptions leave out)."""
        return [
            {"technique": s.technique.name, "version": s.technique.version, "config": dataclasses.asdict(s.config),
             **({"unused": list(unused)} if (unused := s.unused_fields()) else {})}
            for s in self.steps
            if stage is None or s.technique.stage == stage
        ]
