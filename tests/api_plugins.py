"""A technique and a target defined in user code, for tests of ``autocompress.compress(techniques=[...],
target=...)``. They live in an importable module so ``isolate=True`` children can import them too."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from optuna.distributions import CategoricalDistribution

from autocompress.arch import set_module, slice_linear
from autocompress.measure import Measurement, MeasureSettings, Target, measure_eager
from autocompress.technique import ApplyContext, Stage, Technique


@dataclass(frozen=True)
class LastLayerFfnConfig:
    keep_fraction: float = 0.5


class LastLayerFfnPruning(Technique):
    """L1 pruning of the FFN neurons of the last encoder layer only: layers end up with different widths,
    which plain transformers cannot load (the export needs its trust_remote_code loader)."""

    name = "last_layer_ffn_pruning"
    stage = Stage.STRUCTURE
    Config = LastLayerFfnConfig

    @classmethod
    def search_space(cls):
        return {"keep_fraction": CategoricalDistribution([0.25, 0.5])}

    def apply(self, model, config: LastLayerFfnConfig, context: ApplyContext):
        paths = context.adapter.layer_paths(context.adapter.num_layers() - 1)
        ffn_in, ffn_out = context.adapter.linear(paths.ffn_in), context.adapter.linear(paths.ffn_out)
        scores = ffn_in.weight.detach().abs().sum(dim=1)
        keep = torch.topk(scores, max(1, round(scores.numel() * config.keep_fraction))).indices.sort().values
        set_module(model, paths.ffn_in, slice_linear(ffn_in, keep_out=keep))
        set_module(model, paths.ffn_out, slice_linear(ffn_out, keep_in=keep))
        return model


class SingleThreadCpu(Target):
    """PyTorch eager on one core, whatever --threads says (a deployment on a single-core device)."""

    name = "cpu-1thread"
    description = "PyTorch eager mode, one thread"

    def measure(self, model, settings: MeasureSettings) -> Measurement:
        return measure_eager(model, dataclasses.replace(settings, threads=1))
