"""Builds the plugin host: built-ins first, then the ``autocompress`` entry-point group.

Built-in plugins are plain modules listed in ``BUILTIN_PLUGINS`` and registered through the
same call as third-party ones. ``check_pending()`` runs right after loading so a misspelled
hook fails loudly with the plugin's name. Set ``AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD=1`` to
load only the built-ins (clean tests).

A plugin may declare the plugin API versions it supports (``AUTOCOMPRESS_PLUGIN_API =
">=1.0,<2"``); one that excludes ``hookspecs.PLUGIN_API_VERSION`` is not registered and is
listed as broken with both versions, and the others still load. Implementing a deprecated hook
or hook argument warns (``PluginDeprecationWarning``) and is recorded with the plugin.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from autocompress import __version__, hookspecs
from autocompress.errors import InputError, PluginError
from autocompress.registry import Provenance, Registry
from autocompress.technique import validate_technique_class

ENTRY_POINT_GROUP = "autocompress"
DISABLE_AUTOLOAD_ENV = "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "built-in"

BUILTIN_PLUGINS = (
    "autocompress.plugins.architectures",
    "autocompress.plugins.cpu_target",
    "autocompress.plugins.onnx_target",
    "autocompress.plugins.openvino_target",
    "autocompress.plugins.demo_task",
    "autocompress.plugins.local_task",
    "autocompress.plugins.demo_llm_task",
    "autocompress.plugins.lm_task",
    "autocompress.plugins.embedding_task",
    "autocompress.plugins.ffn_pruning",
    "autocompress.plugins.quantization",
    "autocompress.plugins.head_pruning",
    "autocompress.plugins.low_rank",
    "autocompress.plugins.layer_drop",
    "autocompress.plugins.vocab_trim",
    "autocompress.plugins.layer_sharing",
    "autocompress.plugins.width_pruning",
    "autocompress.plugins.distillation",
    "autocompress.plugins.lora",
    "autocompress.plugins.prompt_tuning",
    "autocompress.plugins.report_outcomes",
    "autocompress.plugins.runtime_report",
    "autocompress.plugins.trial_log",
)


@dataclass
class PluginInfo:
    """One plugin: where it came from and, when it could not be loaded, why."""

    name: str
    distribution: str
    module: str
    error: str | None = None
    #: The plugin API versions it declares it supports (``AUTOCOMPRESS_PLUGIN_API``), if any.
    api: str | None = None
    #: Deprecation warnings raised when it was registered ("file:line: message").
    deprecations: list[str] = field(default_factory=list)


@dataclass
class Host:
    """The loaded plugins and what they registered."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    techniques: Registry = field(default_factory=lambda: Registry("technique"))
    targets: Registry = field(default_factory=lambda: Registry("target"))
    tasks: Registry = field(default_factory=lambda: Registry("task"))
    architectures: Registry = field(default_factory=lambda: Registry("architecture"))

    def plugin(self, name: str) -> PluginInfo | None:
        return next((p for p in self.plugins if p.name == name), None)

    @property
    def broken(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def trial_finished(self, trial_number: int, outcome: dict[str, Any], run_dir: Path | None = None) -> list[str]:
        """Tell every observer; an observer that raises is reported, never fatal. Returns the errors."""
        errors = []
        for plugin, call in each_plugin(self.pm.hook.autocompress_trial_finished):
            try:
                call(trial_number=trial_number, outcome=outcome, run_dir=run_dir)
            except Exception as exc:
                errors.append(f"observer plugin '{plugin}' failed: {exc!r}")
        return errors

    def report_sections(self, run: Any) -> tuple[list[Any], list[str]]:
        """Sections from every report plugin, ordered; a plugin that raises is reported by name."""
        sections, errors = [], []
        for plugin, call in each_plugin(self.pm.hook.autocompress_report_sections):
            try:
                for result in call(run=run):
                    sections.extend(result or [])
            except Exception as exc:
                errors.append(f"report plugin '{plugin}' failed: {exc!r}")
        return sorted(sections, key=lambda s: s.order), errors


def each_plugin(hook: pluggy.HookCaller) -> Iterator[tuple[str, Callable[..., Any]]]:
    """(plugin name, call) for each plugin implementing ``hook``, in the order pluggy calls them
    (``tryfirst``/``trylast`` honoured). ``call(**kwargs)`` runs pluggy's own hook execution on that
    plugin's implementation and every wrapper, and returns what calling the hook would:
    calling plugins one at a time lets the host report a plugin that raises and go on with the
    others, while hook wrappers, ordering and tracing (``add_hookcall_monitoring``) still work; a
    wrapper sees one call per implementing plugin."""
    impls = hook.get_hookimpls()
    firstresult = bool(hook.spec and hook.spec.opts.get("firstresult"))
    for impl in reversed(impls):
        if impl.wrapper or impl.hookwrapper:
            continue
        # The implementation and the wrappers, in pluggy's order. Selected by the implementation itself:
        # pm.subset_hook_caller would hash the plugin objects, and a plugin need not be hashable.
        selected = [other for other in impls if other is impl or other.wrapper or other.hookwrapper]

        def call(selected: list[pluggy.HookImpl] = selected, **kwargs: Any) -> Any:
            return hook._hookexec(hook.name, selected, kwargs, firstresult)

        yield impl.plugin_name, call


def _distribution_label(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def api_problem(declared: object) -> str | None:
    """Why a plugin declaring ``declared`` (its ``AUTOCOMPRESS_PLUGIN_API``) cannot load here, or None."""
    if declared is None:
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    attribute = hookspecs.PLUGIN_API_ATTRIBUTE
    try:
        if not isinstance(declared, str):
            raise InvalidSpecifier(repr(declared))
        supported = SpecifierSet(declared)
    except InvalidSpecifier:
        return f"{attribute} = {declared!r} is not a version specifier such as '>=1.0,<2'"
    if supported.contains(hookspecs.PLUGIN_API_VERSION, prereleases=True):
        return None
    return (f"supports plugin API {declared}, but autocompress {__version__} provides plugin API "
            f"{hookspecs.PLUGIN_API_VERSION}")


def register_plugin(host: Host, plugin: ModuleType | object, info: PluginInfo) -> None:
    """Register one plugin object under ``info.name``, checking its declared API range first.

    An incompatible plugin is recorded as broken (never registered); a hook implementation
    that does not match its spec raises ``PluginError`` naming the plugin and distribution.
    """
    host.plugins.append(info)
    declared = getattr(plugin, hookspecs.PLUGIN_API_ATTRIBUTE, None)
    info.api = None if declared is None else str(declared)
    problem = api_problem(declared)
    if problem is not None:
        info.error = f"incompatible: {problem}"
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", hookspecs.PluginDeprecationWarning)
        try:
            host.pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin '{info.name}' ({info.distribution}): {exc}") from None
    for warning in caught:
        if issubclass(warning.category, hookspecs.PluginDeprecationWarning):
            info.deprecations.append(f"{warning.filename}:{warning.lineno}: {warning.message}")
        # Re-emitted so the usual filters (e.g. pytest -W error) still see it at the plugin's line.
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def build_host(
    disabled: Iterable[str] = (),
    autoload: bool | None = None,
    extra_plugins: Iterable[tuple[str, ModuleType | object]] = (),
) -> Host:
    """Create the plugin manager, load built-ins and entry points, and collect registrations.

    ``disabled`` names plugins (built-in module or entry-point names) to skip. ``extra_plugins``
    registers (name, object) pairs directly, as tests and embedding applications do.
    """
    disabled = set(disabled)
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("1", "true", "yes")
    pm = pluggy.PluginManager("autocompress")
    pm.add_hookspecs(hookspecs)
    host = Host(pm)

    for module_name in BUILTIN_PLUGINS:
        short = module_name.rsplit(".", 1)[-1]
        if short in disabled or module_name in disabled:
            continue
        info = PluginInfo(short, BUILTIN, module_name)
        register_plugin(host, importlib.import_module(module_name), info)

    if autoload:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or pm.get_plugin(ep.name) is not None:
                continue
            info = PluginInfo(ep.name, _distribution_label(ep), ep.value)
            try:
                plugin = ep.load()
            except Exception as exc:  # one broken plugin must not take the others down
                info.error = f"import failed: {type(exc).__name__}: {exc}"
                host.plugins.append(info)
                continue
            register_plugin(host, plugin, info)

    for name, plugin in extra_plugins:
        info = PluginInfo(name, "registered in code", getattr(plugin, "__name__", repr(plugin)))
        register_plugin(host, plugin, info)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin_name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        info = host.plugin(plugin_name)
        where = f" ({info.distribution})" if info else ""
        raise PluginError(f"plugin '{plugin_name}'{where}: {exc}") from None

    _collect(host)
    return host


def _collect(host: Host) -> None:
    """Ask every plugin to register its classes, each through a register scoped to that plugin."""
    hooks = (
        (host.pm.hook.autocompress_register_architectures, host.architectures, None),
        (host.pm.hook.autocompress_register_targets, host.targets, None),
        (host.pm.hook.autocompress_register_tasks, host.tasks, None),
        (host.pm.hook.autocompress_register_techniques, host.techniques, validate_technique_class),
    )
    for hook, registry, validate in hooks:
        for plugin, call in each_plugin(hook):
            info = host.plugin(plugin)
            provenance = Provenance(info.name, info.distribution)
            before = set(registry.names())
            call(register=registry.scoped(provenance))
            if validate is not None:
                for name in set(registry.names()) - before:
                    try:
                        validate(registry[name])
                    except (PluginError, InputError) as exc:
                        raise PluginError(f"plugin '{info.name}' ({info.distribution}): {exc}") from None
