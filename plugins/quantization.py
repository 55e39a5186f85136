"""Post-training quantization of linear layers: int8 dynamic (real int8 CPU kernels) or bf16 weights.

int8 uses ``torch.ao.quantization.quantize_dynamic``: weights stored as int8, activations
quantized per batch, matrix products run in int8 kernels (fbgemm/qnnpack). The API is
deprecated in favour of torchao, whose int8 path gives no speed-up without ``torch.compile``
(see DESIGN.md section 5), so the backend stays a detail of this one plugin.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.technique import ApplyContext, Stage, Technique

DTYPES = ("int8", "bf16")


@dataclass(frozen=True)
class QuantizationConfig:
    #: ``int8``: dynamic int8 linears; ``bf16``: all weights and activations in bfloat16.
    dtype: str = "int8"
    #: int8 only: also store the word-embedding table in int8 (weight-only, one scale per row).
    #: In MiniLM-L6 that table is half the parameters; lookups dequantize one row per token, so
    #: latency does not change. (bf16 already halves every table.)
    embeddings: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.embeddings, bool):
            raise ValueError(f"embeddings must be true or false, got {self.embeddings!r}")


def quantize_int8_dynamic(model: nn.Module, embedding_path: str | None = None) -> nn.Module:
    """int8 dynamic linears; with ``embedding_path``, that embedding table too (weight-only int8).

    Only the word embeddings: BERT feeds position/token-type tables with expanded (non-contiguous)
    indices, which the int8 embedding kernel refuses, and they are small anyway.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

        spec: dict = {nn.Linear: default_dynamic_qconfig}
        if embedding_path is not None:
            spec[embedding_path] = float_qparams_weight_only_qconfig
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False)


class Quantization(Technique):
    name = "quantization"
    stage = Stage.POST
    Config = QuantizationConfig
    description = "int8 dynamic quantization of linear layers (optionally the word embeddings too), or bf16 weights"
    references = {"int8 dynamic only": {"dtype": "int8"}, "bf16 only": {"dtype": "bf16"}}

    def apply(self, model, config: QuantizationConfig, context: ApplyContext):
        if config.dtype == "bf16":
            return model.to(torch.bfloat16)
        return quantize_int8_dynamic(model, context.adapter.word_embeddings_path() if config.embeddings else None)


@hookimpl
def autocompress_register_techniques(register):
    register.add(Quantization)
