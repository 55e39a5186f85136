"""autocompress: search combinations of compression techniques for a target machine.

The public API is what this package exports: the names in ``__all__``, documented in
docs/api.md and versioned by ``PUBLIC_API_VERSION``. Everything else (``autocompress.search``,
``autocompress.model_io``, ...) is internal: importable, but free to change in any release,
the way pytest promises ``pytest`` and not ``_pytest``.

``import autocompress`` stays light (no torch): the names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

import pluggy

__version__ = "0.1.0"

#: Version of the public Python API (``__all__``), ``MAJOR.MINOR``. A minor bump adds names,
#: arguments or result fields; a major bump removes or changes one. Plugins are versioned
#: separately by ``autocompress.hookspecs.PLUGIN_API_VERSION``.
PUBLIC_API_VERSION = "1.0"

hookimpl = pluggy.HookimplMarker("autocompress")


def _quiet_third_party_imports() -> None:
    from autocompress.log_noise import TORCHAO_CUDA_EXTENSIONS, TORCHAO_ENUM_CONSTANT, drop_for_good

    drop_for_good(TORCHAO_CUDA_EXTENSIONS, TORCHAO_ENUM_CONSTANT)


_quiet_third_party_imports()


def load_pretrained(directory, host=None):
    """Reload a model saved by autocompress (``best/`` or an export): returns (model, tokenizer).

    ``host`` (``autocompress.plugin_manager.build_host()``) provides the techniques that rebuild the
    saved structure; by default the installed plugins are loaded.
    """
    from autocompress.model_io import load_pretrained as _load

    if host is None:
        from autocompress.plugin_manager import build_host

        host = build_host()
    return _load(directory, host.techniques, host.architectures)


# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    # Running a search from Python and reading its results.
    "compress": "autocompress.api",
    "open_run": "autocompress.api",
    "SearchResult": "autocompress.api",
    "Candidate": "autocompress.api",
    "TeacherBaseline": "autocompress.api",
    "TrialResult": "autocompress.api",
    # Writing plugins: the contracts a technique, a target and a task implement.
    "Technique": "autocompress.technique",
    "Stage": "autocompress.technique",
    "ApplyContext": "autocompress.technique",
    "Target": "autocompress.measure",
    "Measurement": "autocompress.measure",
    "MeasureSettings": "autocompress.measure",
    "TaskProvider": "autocompress.task",
    "TaskOptions": "autocompress.task",
    "LoadedTask": "autocompress.task",
    # Errors a caller can catch; each carries the exit code the command line uses.
    "AutocompressError": "autocompress.errors",
    "InputError": "autocompress.errors",
    "DataError": "autocompress.errors",
    "PluginError": "autocompress.errors",
    "ExportError": "autocompress.errors",
}

__all__ = ["PUBLIC_API_VERSION", "__version__", "hookimpl", "load_pretrained", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autocompress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
