"""What structure steps did to a model: recorded with the model, saved in its manifest, replayed on load.

``autocompress.candidate.apply_steps`` records every structure step it applies on the model
itself (so copies, recovery training and re-saving keep it): the model's configuration before
the first step (the base), then per step the technique's name, version and config, the ``State``
its ``apply`` recorded (``context.record``) and the changes it made to ``model.config``.

Loading replays the record (``rebuild_model``): build the model from the base configuration, then
for each step call the technique's ``rebuild`` with its state and re-apply its config changes, in
the order they were applied. The saved weights are loaded afterwards. Nothing here knows a layer
shape or a technique's state: each technique rebuilds what it changed.

Techniques written for plugin API <= 1.2 declare no ``State`` and no ``rebuild``; their steps are
recorded too, and on load the modules whose saved shapes differ are rebuilt from those shapes
(``autocompress.arch.match_saved_shapes``, deprecated), with a ``PluginDeprecationWarning``. When
every step is such a technique the model is built from the final configuration first, as before
plugin API 1.3 (so a technique that kept the configuration true, e.g. a layer count, reloads).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autocompress.errors import InputError, TechniqueError

if TYPE_CHECKING:
    from torch import nn

    from autocompress.registry import Registry
    from autocompress.technique import ApplyContext, PlanStep, Technique

#: Attribute of the model holding its ``StructureRecord``.
ATTRIBUTE = "_autocompress_structure"


@dataclass
class StructureStep:
    """One applied structure step, as saved in the manifest (``structure.steps``)."""

    technique: str
    version: str
    config: dict[str, Any]
    #: ``dataclasses.asdict`` of the State ``apply`` recorded; None when it recorded none.
    state: dict[str, Any] | None = None
    #: ``model.config`` attributes the step changed, with their new values.
    config_changes: dict[str, Any] = field(default_factory=dict)


@dataclass
class StructureRecord:
    """The model's configuration before its first structure step, and the steps since."""

    base_config: dict[str, Any]
    steps: list[StructureStep] = field(default_factory=list)

    def to_manifest(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any], where: str) -> StructureRecord:
        try:
            steps = [StructureStep(**step) for step in data.get("steps", [])]
            return cls(dict(data["base_config"]), steps)
        except (KeyError, TypeError) as exc:
            raise InputError(f"{where}: malformed 'structure' record ({exc})") from None


def structure_of(model: nn.Module) -> StructureRecord | None:
    """The structure record of ``model``, or None when no structure step was applied to it."""
    return getattr(model, ATTRIBUTE, None)


def set_structure(model: nn.Module, record: StructureRecord) -> None:
    object.__setattr__(model, ATTRIBUTE, record)


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Entries of ``after`` that are new or differ from ``before`` (``PretrainedConfig.to_dict()`` form)."""
    missing = object()
    return {key: value for key, value in after.items() if before.get(key, missing) != value}


def apply_config_changes(config: Any, changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        setattr(config, key, value)


def record_step(model: nn.Module, step: PlanStep, before_config: dict[str, Any], states: list[Any],
                source: nn.Module | None = None) -> None:
    """Append ``step`` to the record of ``model`` (started from ``before_config`` when it has none).

    ``states`` are what the step's ``apply`` passed to ``context.record``: none, or one instance of
    the technique's ``State``. ``source`` is the model ``apply`` received, when it returned another.
    """
    technique = step.technique
    if len(states) > 1:
        raise TechniqueError(technique.name, f"apply() recorded {len(states)} states; record one State per apply")
    state = states[0] if states else None
    if state is not None:
        if technique.State is None:
            raise TechniqueError(technique.name, "apply() recorded a state but the technique declares no State")
        if not isinstance(state, technique.State):
            raise TechniqueError(technique.name, f"apply() recorded a {type(state).__name__}, not its "
                                                 f"State ({technique.State.__name__})")
    values = dataclasses.asdict(state) if state is not None else None
    changes = config_changes(before_config, model.config.to_dict())
    try:  # kept in JSON form, as saved and reloaded (e.g. id2label keys become strings)
        values, changes = json.loads(json.dumps([values, changes]))
    except (TypeError, ValueError) as exc:
        raise TechniqueError(technique.name, f"its State or config changes are not JSON-serialisable: {exc}") from None
    record = structure_of(model) or (structure_of(source) if source is not None else None)
    if record is None:
        record = StructureRecord(base_config=json.loads(json.dumps(before_config, default=str)))
    record.steps.append(StructureStep(technique.name, technique.version, dataclasses.asdict(step.config),
                                      values, changes))
    set_structure(model, record)


def _newer(saved: str, installed: str) -> bool | None:
    """Whether version ``saved`` is newer than ``installed``; None when either is no PEP 440 version."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(saved) > Version(installed)
    except InvalidVersion:
        return None


def resolve_technique(techniques: Registry, name: str, version: str, where: str) -> type[Technique]:
    """The registered technique that can rebuild a step saved by technique ``name`` at ``version``.

    InputError (naming the technique and both versions) when none is registered, or when the step
    was saved by a newer (or an unrecognisable, different) version than the one installed.
    """
    technique = techniques.get(name)
    if technique is None:
        raise InputError(f"{where}: saved with technique '{name}' (version {version}), which no installed plugin "
                         f"registers (registered: {', '.join(techniques.names()) or 'none'}); install the plugin "
                         "that provides it")
    version, installed = str(version), str(technique.version)
    newer = _newer(version, installed)
    if newer or (newer is None and version != installed):
        raise InputError(f"{where}: saved by technique '{name}' version {version}, but the installed '{name}' is "
                         f"version {installed}; upgrade the plugin that provides '{name}' to load it")
    return technique


def rebuild_model(record: StructureRecord, final_config: dict[str, Any], build: Callable[[dict[str, Any]], nn.Module],
                  techniques: Registry, architectures: Registry, tokenizer: Any,
                  saved_shapes: Mapping[str, tuple[int, ...]], where: str, infer_shapes: bool = False) -> nn.Module:
    """The model ``record`` describes, in any weights, ready for the saved ones to be loaded strictly.

    ``build(config_dict)`` makes a model from a configuration. The model is built from the base
    configuration; each step's technique rebuilds what it changed (``Technique.rebuild``) and its
    config changes are re-applied, in the order they were applied. ``saved_shapes`` (tensor name
    -> saved shape) serve only the deprecated inference for techniques without ``rebuild``; when
    every step is such (or ``infer_shapes``: a format-1 directory, which recorded no steps) the
    model is built from ``final_config`` and its modules from the saved shapes, as before plugin
    API 1.3.
    """
    from autocompress.arch import adapter_for, match_saved_shapes
    from autocompress.hookspecs import PluginDeprecationWarning
    from autocompress.technique import ApplyContext

    # A step that recorded no state and whose technique is not installed here (a class passed to
    # ``autocompress.compress`` in another process, say) is rebuilt from the saved shapes, as a
    # technique without ``rebuild`` is; a step with state needs its technique.
    steps: list[tuple[StructureStep, type[Technique] | None]] = [
        (step, None if step.state is None and techniques.get(step.technique) is None
         else resolve_technique(techniques, step.technique, step.version, where))
        for step in record.steps]
    legacy = [step.technique for step, technique in steps if technique is None or not technique.rebuilds_structure()]
    if infer_shapes or (steps and len(legacy) == len(steps)):
        model = build(dict(final_config))
    else:
        model = build(dict(record.base_config))
        context = ApplyContext(adapter=adapter_for(model, architectures), tokenizer=tokenizer)
        for step, technique in steps:
            if technique is not None and technique.rebuilds_structure() and (
                    step.state is not None or technique.State is None):
                model = _rebuild_step(model, step, technique, context)
            apply_config_changes(model.config, step.config_changes)
    if (legacy or infer_shapes) and match_saved_shapes(model, saved_shapes) and legacy:
        warnings.warn(PluginDeprecationWarning(
            f"{where}: technique(s) {', '.join(sorted(set(legacy)))} declare no State/rebuild() or are not "
            "installed here; their modules were rebuilt from the saved tensor shapes, which plugin API 2.0 removes "
            "(see docs/plugins.md, 'Structure: record and rebuild')"), stacklevel=2)
    set_structure(model, record)
    return model


def _rebuild_step(model: nn.Module, step: StructureStep, technique: type[Technique],
                  context: ApplyContext) -> nn.Module:
    config = technique.make_config(step.config)
    state = technique.make_state(step.state) if step.state is not None else None
    try:
        model = technique().rebuild(model, config, state, context)
    except InputError:
        raise
    except Exception as exc:
        raise TechniqueError(step.technique, f"rebuild() failed: {type(exc).__name__}: {exc}") from exc
    if model is None:
        raise TechniqueError(step.technique, "rebuild() returned None instead of the model")
    return model
