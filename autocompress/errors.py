"""Exceptions with messages a user can act on.

Every error that the user can fix (bad input, bad config, a broken plugin) derives from
``AutocompressError``; the CLI prints its message without a traceback and exits with
``exit_code``.
"""

from __future__ import annotations


class AutocompressError(Exception):
    """Base class: the message names the file, field or plugin at fault."""

    exit_code = 1


class InputError(AutocompressError):
    """The user's input (CLI option, config file, data, model) is invalid. Exit code 2."""

    exit_code = 2


class MissingPackage(InputError):
    """A Python package that a command needs is not installed. Exit code 2; the message says what
    to install (the requirement autocompress declares for it, when it declares one)."""

    @classmethod
    def for_import(cls, error: ImportError, needed_for: str) -> MissingPackage:
        """The error for ``error`` (raised importing what ``needed_for`` needs)."""
        module = (error.name or str(error)).split(".")[0]
        requirement, extra = declared_requirement(module)
        install = f'pip install "autocompress[{extra}]"' if extra else f'pip install "{requirement}"'
        return cls(f"{needed_for}: the Python package '{module}' is not installed ({error}); run {install}")


def declared_requirement(module: str) -> tuple[str, str | None]:
    """(requirement, extra) autocompress declares for the distribution named like ``module``
    (extra None: a core dependency); (module, None) when it declares none."""
    import importlib.metadata
    import re

    def name(requirement: str) -> str:
        return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;@(]", requirement, maxsplit=1)[0]).lower()

    wanted = re.sub(r"[-_.]+", "-", module).lower()
    try:
        requirements = importlib.metadata.requires("autocompress") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    found = [r for r in requirements if name(r) == wanted]
    core = [r for r in found if "extra ==" not in r]
    if core:
        return core[0].split(";")[0].strip(), None
    for requirement in found:
        match = re.search(r"extra\s*==\s*[\"']([^\"']+)", requirement)
        if match and match.group(1) != "dev":
            return requirement.split(";")[0].strip(), match.group(1)
    return module, None


class DataError(InputError):
    """A data file cannot be used as a classification task."""


class SearchSpaceError(InputError):
    """A search-space declaration (YAML or code) is invalid."""


class PluginError(AutocompressError):
    """A plugin is broken: bad hook, bad technique declaration, duplicate name."""

    exit_code = 3


class DemoDataUnavailable(AutocompressError):
    """The demo data archive could not be fetched or verified."""

    exit_code = 4


class ExportError(AutocompressError):
    """A model cannot be exported to, or run in, another format (ONNX) or runtime (ONNX Runtime)."""


class TechniqueError(AutocompressError):
    """A technique failed while being applied; carries the plugin's name."""

    def __init__(self, technique: str, message: str):
        super().__init__(f"technique '{technique}': {message}")
        self.technique = technique
