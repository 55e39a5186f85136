"""Embedding factorisation: the V x H word-embedding matrix becomes V x r embeddings and an r x H projection.

ALBERT-style. The embedding matrix ``E`` is replaced by its truncated SVD,
``E ~= (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)``: a token is looked up in a ``V x r`` table and projected
to the hidden size by a bias-free ``Linear(r, H)``. That stores ``r * (V + H)`` weights instead of
``V * H``; in all-MiniLM-L6-v2 (V = 30,522, H = 384) the embeddings are about half of all
parameters, so r = 96 removes about a third of the model. Latency barely changes (one small
matrix product per token is added, the lookup gets cheaper), so the technique is for memory.

The rank is ``ceil(rank_ratio * H)``, rounded up to a multiple of 8; when that would not save
weights the embedding is left as it is. It conflicts with vocabulary trimming (both rewrite the
same matrix).

The technique owns the structure it changes (plugin API 1.3): ``apply`` records the rank it chose
(``context.record(State(rank))``) and ``rebuild`` gives a model built from the original
configuration a ``FactorizedEmbedding`` of that rank, into which the saved weights are loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from optuna.distributions import FloatDistribution
from torch import nn

from autocompress import hookimpl
from autocompress.arch import FactorizedEmbedding, get_module, set_module
from autocompress.technique import ApplyContext, Stage, Technique

#: The plugin API versions this plugin is written against (checked by autocompress when loading):
#: 1.3 brought Technique.State / rebuild, which this plugin implements.
AUTOCOMPRESS_PLUGIN_API = ">=1.3,<2"

RANK_MULTIPLE = 8


@dataclass(frozen=True)
class EmbeddingFactorizationConfig:
    #: Rank of the factorisation as a fraction of the hidden size H.
    rank_ratio: float = 0.25

    def __post_init__(self):
        if isinstance(self.rank_ratio, bool) or not isinstance(self.rank_ratio, (int, float)):
            raise ValueError(f"rank_ratio must be a number, got {self.rank_ratio!r}")
        if not 0.0 < self.rank_ratio <= 1.0:
            raise ValueError(f"rank_ratio must be in (0, 1], got {self.rank_ratio}")


@dataclass(frozen=True)
class EmbeddingFactorizationState:
    #: Rank r of the factorisation: a V x r table and an r x H projection.
    rank: int


def choose_rank(hidden: int, rank_ratio: float) -> int:
    rank = math.ceil(math.ceil(rank_ratio * hidden) / RANK_MULTIPLE) * RANK_MULTIPLE
    return max(1, min(hidden, rank))


def factorize_embedding(embedding: nn.Embedding, rank: int) -> FactorizedEmbedding:
    """Truncated SVD of the embedding matrix, the singular values split evenly between the factors."""
    weight = embedding.weight.detach()
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = torch.sqrt(s[:rank])
    table = nn.Embedding(embedding.num_embeddings, rank, padding_idx=embedding.padding_idx, dtype=weight.dtype)
    projection = nn.Linear(rank, embedding.embedding_dim, bias=False, dtype=weight.dtype)
    with torch.no_grad():
        table.weight.copy_(u[:, :rank] * root[None, :])
        projection.weight.copy_((root[:, None] * vh[:rank]).T)
    return FactorizedEmbedding(table, projection)


class EmbeddingFactorization(Technique):
    name = "embedding_factorization"
    stage = Stage.STRUCTURE
    Config = EmbeddingFactorizationConfig
    description = "Word embeddings V x H as V x r embeddings + r x H projection (truncated SVD)"
    State = EmbeddingFactorizationState
    conflicts = frozenset({"vocab_trim"})

    @classmethod
    def search_space(cls):
        # The default space, declared in code; a run overrides it with --search-space FILE.yaml:
        #   embedding_factorization: {rank_ratio: {type: float, low: 0.2, high: 0.5, step: 0.05}}
        return {"rank_ratio": FloatDistribution(0.1, 0.6, step=0.05)}

    def apply(self, model, config: EmbeddingFactorizationConfig, context: ApplyContext):
        path = context.adapter.word_embeddings_path()
        embedding = get_module(model, path)
        if not isinstance(embedding, nn.Embedding):  # already factorised
            return model
        vocabulary, hidden = embedding.num_embeddings, embedding.embedding_dim
        rank = choose_rank(hidden, config.rank_ratio)
        if rank * (vocabulary + hidden) < vocabulary * hidden:
            set_module(model, path, factorize_embedding(embedding, rank))
            context.record(EmbeddingFactorizationState(rank=rank))
        return model

    def rebuild(self, model, config: EmbeddingFactorizationConfig, state: EmbeddingFactorizationState,
                context: ApplyContext):
        # The shapes alone: the saved weights are loaded into them afterwards.
        path = context.adapter.word_embeddings_path()
        embedding = get_module(model, path)
        table = nn.Embedding(embedding.num_embeddings, state.rank, padding_idx=embedding.padding_idx,
                             dtype=embedding.weight.dtype)
        projection = nn.Linear(state.rank, embedding.embedding_dim, bias=False, dtype=embedding.weight.dtype)
        set_module(model, path, FactorizedEmbedding(table, projection))
        return model


@hookimpl
def autocompress_register_techniques(register):
    register.add(EmbeddingFactorization)
