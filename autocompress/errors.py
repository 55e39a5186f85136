"""Exceptions with messages a user can act on.

Every error that the user can fix (bad input, bad config, a broken plugin) derives from
``AutocompressError``; the CLI prints its message without a traceback and exits with
``exit_code``.
"""


class AutocompressError(Exception):
    """Base class: the message names the file, field or plugin at fault."""

    exit_code = 1


class InputError(AutocompressError):
    """The user's input (CLI option, config file, data, model) is invalid. Exit code 2."""

    exit_code = 2


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
