"""Third-party autocompress plugin: consecutive layers share one feed-forward block (``ffn_sharing``)."""

from autocompress_sharing_plugin.ffn_sharing import FfnSharing

__all__ = ["FfnSharing"]
