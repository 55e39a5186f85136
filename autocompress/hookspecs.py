"""Every hook autocompress calls, in one place.

A plugin implements any of these with ``@autocompress.hookimpl`` on a function of the same
name. Built-in plugins (``autocompress.plugin_manager.BUILTIN_PLUGINS``) go through exactly
the same hooks as third-party plugins found through the ``autocompress`` entry-point group.

Register hooks receive a register object scoped to the calling plugin, so that every
registered class is recorded with the plugin (and distribution) that provided it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from autocompress.registry import Register

hookspec = pluggy.HookspecMarker("autocompress")

#: Version of the plugin API described in this module. Bumped when a hook's signature changes.
PLUGIN_API_VERSION = "1.0"


@hookspec
def autocompress_register_techniques(register: Register) -> None:
    """Register compression techniques: call ``register.add(TechniqueClass)`` once per class.

    Called once when the plugin manager is built. A technique class implements
    ``autocompress.technique.Technique`` (name, Config, stage, search_space, apply).
    Two plugins registering the same technique name is an error naming both plugins.
    """


@hookspec
def autocompress_register_targets(register: Register) -> None:
    """Register hardware/runtime targets that measure latency and memory of a candidate.

    Call ``register.add(TargetClass)`` where the class implements
    ``autocompress.measure.Target``. Called once when the plugin manager is built.
    """


@hookspec
def autocompress_register_tasks(register: Register) -> None:
    """Register task providers (model + data + metric), e.g. the default demo task.

    Call ``register.add(TaskClass)`` where the class implements ``autocompress.task.TaskProvider``.
    Called once when the plugin manager is built.
    """


@hookspec
def autocompress_register_architectures(register: Register) -> None:
    """Register architecture adapters that name the parts of a model family.

    Call ``register.add(AdapterClass)`` where the class implements
    ``autocompress.arch.ArchitectureAdapter``. Techniques reach embeddings, encoder layers,
    attention and FFN linears only through an adapter, so supporting a new family is one adapter.
    """


@hookspec
def autocompress_trial_finished(trial_number: int, outcome: dict[str, Any]) -> None:
    """Observe a finished trial (complete, infeasible, pruned or failed).

    ``outcome`` is the row written to trials.csv: ``state``, ``params``, ``accuracy``,
    ``latency_ms``, ``memory_mb``, ``feasible``, ``reason``. Return value is ignored; an
    observer that raises is reported and does not stop the search.
    """
