"""L1-norm structured pruning of FFN neurons.

Neuron i of layer l scores ``s_l(i) = sum_j |W_l(i, j)|`` over the rows of the FFN input
linear (``intermediate.dense`` in BERT; in a gated FFN such as Llama's, the rows of the gate and
the up projection are summed). The top ``keep_fraction`` neurons of each layer are kept and the
linears are physically sliced: rows of the FFN input (and gate), columns of the FFN output.
The kept width of every layer is the step's recorded state; ``rebuild`` gives a model built from
the original configuration those widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from autocompress import hookimpl
from autocompress.arch import keep_ffn_neurons, projection_weight, projection_width
from autocompress.technique import ApplyContext, Stage, Technique


@dataclass(frozen=True)
class FfnPruningConfig:
    #: Fraction of FFN neurons kept in every layer.
    keep_fraction: float = 0.5
    #: Kept width is rounded up to a multiple of this (SIMD-friendly shapes run faster).
    multiple_of: int = 8

    def __post_init__(self):
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of must be >= 1, got {self.multiple_of}")


def l1_neuron_scores(weight: torch.Tensor) -> torch.Tensor:
    """``s(i) = sum_j |W(i, j)|`` for an (out, in) weight: one score per output neuron."""
    return weight.detach().abs().sum(dim=1)


def kept_width(total: int, keep_fraction: float, multiple_of: int) -> int:
    width = math.ceil(total * keep_fraction / multiple_of) * multiple_of
    return max(1, min(total, width))


@dataclass(frozen=True)
class FfnPruningState:
    #: Per encoder layer, the number of FFN neurons kept.
    widths: list[int]


class FfnPruning(Technique):
    name = "ffn_pruning"
    stage = Stage.STRUCTURE
    Config = FfnPruningConfig
    State = FfnPruningState
    description = "L1-norm structured pruning of FFN neurons (weights physically removed)"

    def apply(self, model, config: FfnPruningConfig, context: ApplyContext):
        adapter = context.adapter
        widths = []
        for paths in adapter.all_layer_paths():
            adapter.linear(paths.ffn_out)  # a clear error when the FFN is not made of plain linears
            scores = sum(l1_neuron_scores(projection_weight(model, paths, part)) for part in paths.ffn_parts)
            width = kept_width(scores.numel(), config.keep_fraction, config.multiple_of)
            # Keep the original neuron order: only which neurons survive changes.
            self._keep(model, paths, torch.topk(scores, width).indices.sort().values)
            widths.append(width)
        context.record(FfnPruningState(widths=widths))
        self._update_config(model, adapter, widths)
        return model

    def rebuild(self, model, config: FfnPruningConfig, state: FfnPruningState, context: ApplyContext):
        adapter = context.adapter
        for paths, width in zip(adapter.all_layer_paths(), state.widths, strict=True):
            if projection_width(model, paths, "ffn_in") != width:
                self._keep(model, paths, torch.arange(width))
        self._update_config(model, adapter, state.widths)
        return model

    @staticmethod
    def _keep(model, paths, neurons: torch.Tensor) -> None:
        keep_ffn_neurons(model, paths, neurons)

    @staticmethod
    def _update_config(model, adapter, widths: list[int]) -> None:
        if len(set(widths)) == 1:  # keeps the config true, so plain transformers can reload the model
            setattr(model.config, adapter.ffn_size_attribute, widths[0])


@hookimpl
def autocompress_register_techniques(register):
    register.add(FfnPruning)
