"""autocompress: search combinations of compression techniques for a target machine."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("autocompress")


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
