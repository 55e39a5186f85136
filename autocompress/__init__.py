"""autocompress: search combinations of compression techniques for a target machine."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("autocompress")


def load_pretrained(directory):
    """Reload a model saved by autocompress (``best/`` or an export): returns (model, tokenizer)."""
    from autocompress.model_io import load_pretrained as _load

    return _load(directory)
