"""The Optuna search: settings, the trial objective, the study and its outputs.

``run_search(settings, host) -> SearchOutcome`` is the entry point (imported on first use, so
that reading ``autocompress.search.settings`` stays free of torch and Optuna).
"""

from __future__ import annotations

from typing import Any

_ENTRY_POINTS = {"run_search": "autocompress.search.study", "SearchOutcome": "autocompress.search.study"}


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
