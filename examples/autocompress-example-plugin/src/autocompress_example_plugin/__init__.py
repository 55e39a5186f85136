"""Example third-party autocompress plugin: factorised word embeddings."""

from autocompress_example_plugin.embedding_factorization import EmbeddingFactorization

__all__ = ["EmbeddingFactorization"]
