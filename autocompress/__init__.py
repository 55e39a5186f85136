"""autocompress: search combinations of compression techniques for a target machine."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("autocompress")
