"""Every hook autocompress calls, in one place.

A plugin implements any of these with ``@autocompress.hookimpl`` on a function of the same
name. Built-in plugins (``autocompress.plugin_manager.BUILTIN_PLUGINS``) go through exactly
the same hooks as third-party plugins found through the ``autocompress`` entry-point group.

Register hooks receive a register object scoped to the calling plugin, so that every
registered class is recorded with the plugin (and distribution) that provided it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from autocompress.registry import Register
    from autocompress.report.facts import ReportSection
    from autocompress.report.run import RunData

hookspec = pluggy.HookspecMarker("autocompress")

#: Version of the plugin API described in this module and in docs/plugins.md, ``MAJOR.MINOR``.
#: A minor bump adds hooks, optional hook arguments or contract attributes (old plugins keep
#: working); a major bump removes or changes something, and only what was deprecated before.
PLUGIN_API_VERSION = "1.8"

#: Module (or plugin object) attribute in which a plugin declares the API versions it supports,
#: as a PEP 440 specifier, e.g. ``AUTOCOMPRESS_PLUGIN_API = ">=1.0,<2"``. A plugin whose range
#: excludes ``PLUGIN_API_VERSION`` is not registered and is listed as broken; one without the
#: attribute is assumed to support the current API.
PLUGIN_API_ATTRIBUTE = "AUTOCOMPRESS_PLUGIN_API"


class PluginDeprecationWarning(DeprecationWarning):
    """A plugin implements a hook, or a hook argument, that the next major API version removes.

    Emitted through pluggy's ``warn_on_impl`` / ``warn_on_impl_args`` when the plugin is
    registered, pointing at the plugin's own function; ``autocompress plugins`` lists it too.
    """


@hookspec
def autocompress_register_techniques(register: Register) -> None:
    """Register compression techniques: call ``register.add(TechniqueClass)`` once per class.

    Called once when the plugin manager is built. A technique class implements
    ``autocompress.technique.Technique`` (name, Config, stage, search_space, apply; a structure
    technique that changes modules also ``State`` and ``rebuild``, API 1.3).
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
    An adapter may also name every part that reads or writes the hidden width
    (``residual_stream()`` and the per-layer norms of ``LayerPaths``; API 1.3), which techniques
    that narrow the width need, and replace the family's own module types by the standard ones they
    compute whenever it is made (``standardise_modules()``: GPT-2's ``Conv1D`` becomes ``nn.Linear``).
    """


@hookspec
def autocompress_trial_finished(trial_number: int, outcome: dict[str, Any], run_dir: Path) -> None:
    """Observe a finished trial (complete, infeasible, pruned or failed).

    ``outcome`` is the row written to trials.csv (``TrialRecord.row()``): ``state``, ``ended``,
    ``plan``, ``test_accuracy``, ``val_accuracy``, ``latency_ms``, ``memory_mb``, ``feasible``,
    ``reason``, ``param.<name>``... ``run_dir`` is the worker's run directory (added in API 1.1;
    implementations may leave it out of their signature). Return value is ignored; an observer
    that raises is reported and does not stop the search (nor the other observers). Each observer
    is called on its own through pluggy, so a hook wrapper sees one call per observer.
    """


@hookspec
def autocompress_report_sections(run: RunData) -> list[ReportSection] | None:
    """Add sections to report.html and report.md.

    Called once each time a report is rendered (at the end of ``autocompress search`` and by
    ``autocompress report``). ``run`` is ``autocompress.report.run.RunData``: the study, the
    trials frame (trials.csv), every trial's record (``run.trials``: the plan as data, how it
    ended, accuracies, measurement), the Pareto document, the run record, the by-hand references.
    Return a list of ``autocompress.report.facts.ReportSection`` (title, trusted HTML fragment,
    Markdown, order) or None. Results of all plugins are concatenated (not firstresult); a
    plugin that raises gets a short notice in the report instead of its section. Each plugin is
    called on its own through pluggy, so a hook wrapper sees one call per implementing plugin.
    """
