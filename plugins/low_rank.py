"""Low-rank factorisation of linear layers by truncated SVD.

A weight ``W`` (out x in) is replaced by the product of two thin matrices,
``W ~= U_r S_r V_r^T = (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)``: the linear becomes
``nn.Sequential(Linear(in, r, bias=False), Linear(r, out, bias=original))``. That costs
``r * (in + out)`` multiply-adds per token instead of ``in * out``, so a layer is factorised only
when it saves work; otherwise it is left as it is. Splitting ``sqrt(S_r)`` between both factors
keeps their scales alike (friendlier to later fine-tuning and quantization).

The rank is ``ceil(rank_ratio * min(out, in))``, or, when ``energy`` is set, the smallest rank
keeping that fraction of the sum of squared singular values; either way it is rounded up to a
multiple of 8 (SIMD-friendly shapes run faster) and capped at ``min(out, in)``.

The rank of every factorised linear (by module path) is the step's recorded state; ``rebuild``
replaces those linears of a model built from the original configuration by factor pairs of
those ranks (``autocompress.arch.factorised_linear``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.arch import LayerPaths, factorised_linear, get_module, set_module
from autocompress.technique import ApplyContext, Stage, Technique

LAYER_GROUPS = ("attention", "ffn", "both")
#: Ranks are rounded up to a multiple of this.
RANK_MULTIPLE = 8


@dataclass(frozen=True)
class LowRankConfig:
    #: Kept rank as a fraction of ``min(out, in)`` of each linear.
    rank_ratio: float = 0.5
    #: When set, the smallest rank keeping this fraction of the squared singular values (overrides rank_ratio).
    energy: float | None = None
    #: Which linears of each encoder layer: "attention" (q, k, v, output), "ffn" (in, out) or "both".
    layers: str = "ffn"

    def __post_init__(self):
        if isinstance(self.rank_ratio, bool) or not isinstance(self.rank_ratio, (int, float)):
            raise ValueError(f"rank_ratio must be a number, got {self.rank_ratio!r}")
        if not 0.0 < self.rank_ratio <= 1.0:
            raise ValueError(f"rank_ratio must be in (0, 1], got {self.rank_ratio}")
        if self.energy is not None:
            if isinstance(self.energy, bool) or not isinstance(self.energy, (int, float)):
                raise ValueError(f"energy must be a number or null, got {self.energy!r}")
            if not 0.0 < self.energy <= 1.0:
                raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.layers not in LAYER_GROUPS:
            raise ValueError(f"layers must be one of {', '.join(LAYER_GROUPS)}, got {self.layers!r}")


def target_paths(paths: LayerPaths, layers: str) -> list[str]:
    """The linears of one encoder layer that ``layers`` selects."""
    attention = list(paths.attention_linears)
    ffn = [*paths.ffn_inputs, paths.ffn_out]
    return {"attention": attention, "ffn": ffn, "both": attention + ffn}[layers]


def choose_rank(singular_values: torch.Tensor, config: LowRankConfig) -> int:
    """Rank for a matrix with these singular values (descending), rounded up to a multiple of 8."""
    full = singular_values.numel()
    if config.energy is not None:
        squared = singular_values.double() ** 2
        kept = torch.cumsum(squared, dim=0) / squared.sum().clamp_min(1e-300)
        # Smallest r with kept[r-1] >= energy; the tolerance absorbs rounding when energy == 1.
        rank = int(torch.searchsorted(kept, torch.tensor([config.energy - 1e-12], dtype=kept.dtype))) + 1
    else:
        rank = math.ceil(config.rank_ratio * full)
    rank = math.ceil(rank / RANK_MULTIPLE) * RANK_MULTIPLE
    return max(1, min(full, rank))


def saves_work(rank: int, in_features: int, out_features: int) -> bool:
    """Whether two thin linears of this rank need fewer multiply-adds than the original."""
    return rank * (in_features + out_features) < in_features * out_features


def factorise_linear(linear: nn.Linear, rank: int, singular: tuple[torch.Tensor, ...] | None = None) -> nn.Sequential:
    """``Sequential(Linear(in, r, bias=False), Linear(r, out))`` with ``W ~= U_r S_r V_r^T``.

    ``singular`` is ``torch.linalg.svd(W, full_matrices=False)`` when the caller already has it.
    """
    weight = linear.weight.detach()
    u, s, vh = singular if singular is not None else torch.linalg.svd(weight.double(), full_matrices=False)
    root = torch.sqrt(s[:rank])
    pair = factorised_linear(linear, rank)
    first, second = pair[0], pair[1]
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            second.bias.copy_(linear.bias.detach())
    return pair


@dataclass(frozen=True)
class LowRankState:
    #: Module path -> rank of each linear that was factorised.
    ranks: dict[str, int]


class LowRank(Technique):
    name = "low_rank"
    stage = Stage.STRUCTURE
    Config = LowRankConfig
    State = LowRankState
    description = "Truncated-SVD factorisation of attention and/or FFN linears into two thin linears"

    def apply(self, model, config: LowRankConfig, context: ApplyContext):
        ranks = {}
        for paths in context.adapter.all_layer_paths():
            for path in target_paths(paths, config.layers):
                linear = get_module(model, path)
                if not isinstance(linear, nn.Linear):  # already factorised, or not a plain linear
                    continue
                # SVD in float64: exact enough that full rank reproduces the layer to ~1e-6.
                singular = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
                rank = choose_rank(singular[1], config)
                if saves_work(rank, linear.in_features, linear.out_features):
                    set_module(model, path, factorise_linear(linear, rank, singular))
                    ranks[path] = rank
        if ranks:
            context.record(LowRankState(ranks=ranks))
        return model

    def rebuild(self, model, config: LowRankConfig, state: LowRankState, context: ApplyContext):
        for path, rank in state.ranks.items():
            set_module(model, path, factorised_linear(get_module(model, path), rank))
        return model


@hookimpl
def autocompress_register_techniques(register):
    register.add(LowRank)
