"""Post-training quantization: int8 dynamic (real int8 CPU kernels), bf16 weights, static int8, or
int4 weight-only (torchao's packed CPU kernel; the ``int4`` extra).

``int8`` uses ``torch.ao.quantization.quantize_dynamic``: weights stored as int8, activations
quantized per batch, matrix products run in int8 kernels (fbgemm/qnnpack). The API is
deprecated in favour of torchao, whose int8 path gives no speed-up without ``torch.compile``
(see DESIGN.md section 5), so the backend stays a detail of this one plugin. The onnxruntime and
openvino targets run the same candidate with their own int8 kernels.

``int8-static`` quantizes activations with fixed scales calibrated on a seeded sample of the
TRAINING split (never validation or test). Its scales belong to the graph a runtime executes,
so this step returns an ``autocompress.deployment.StaticInt8Request`` (the float model, the
calibration sample, the layers to keep in float) that the onnxruntime target (static QDQ) and
the openvino target (NNCF) finish; the cpu target refuses it (PyTorch eager's static int8 is no
faster than dynamic int8). **Accuracy-aware fallback**: ``fallback_layers: k`` keeps the k encoder
layers most sensitive to int8 in float, sensitivity measured per layer on a validation sample
(``autocompress.int8_sensitivity``).

``int4`` (``pip install "autocompress[int4]"``): the model in bf16, then every linear layer whose
shape the kernel takes (input width a multiple of ``group_size``, output width of 16) stores its
weights as int4 with a scale and a zero per group of ``group_size`` input columns, packed for
``torch.ops.aten._weight_int4pack_mm_for_cpu`` (torchao's "opaque" CPU layout); activations stay
bf16. On SmolLM2-135M (2 threads, AMD EPYC) group 32 ran 2.95x faster per generated token than
fp32 and 6.96x smaller, at +6.7% perplexity; group 64 3.06x at +58% (benchmarks/llm_techniques.py).
The cpu target only: ONNX export refuses the packed tensors.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.deployment import CalibrationSample, StaticInt8Request, calibration_texts
from autocompress.int8_sensitivity import layer_sensitivity, most_sensitive
from autocompress.technique import ApplyContext, Stage, Technique

DTYPES = ("int8", "bf16", "int8-static", "int4")
#: Group sizes (input columns sharing one int4 scale and zero) the CPU kernel packs.
INT4_GROUP_SIZES = (32, 64, 128, 256)
#: The packed int4 CPU kernel's rule for a layer's output width.
INT4_OUT_MULTIPLE = 16
#: Validation examples the per-layer sensitivity is measured on (batches of 32).
SENSITIVITY_EXAMPLES = 128


@dataclass(frozen=True)
class QuantizationConfig:
    #: ``int8``: dynamic int8 linears; ``bf16``: all weights and activations in bfloat16;
    #: ``int8-static``: int8 linears with calibrated activation scales (onnxruntime/openvino targets).
    dtype: str = "int8"
    #: int8 and int8-static: also store the word-embedding table in int8 (weight-only, one scale per row).
    #: In MiniLM-L6 that table is half the parameters; lookups dequantize one row per token, so
    #: latency does not change. (bf16 already halves every table.)
    embeddings: bool = False
    #: int8-static only: how many of the encoder layers most sensitive to int8 stay in float.
    fallback_layers: int = 0
    #: int8-static only: training texts the activation scales are calibrated on.
    calibration_size: int = 128
    #: int4 only: input columns per scale and zero (smaller: closer to the float weights, a little slower).
    group_size: int = 32

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.embeddings, bool):
            raise ValueError(f"embeddings must be true or false, got {self.embeddings!r}")
        for name, low in (("fallback_layers", 0), ("calibration_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.group_size not in INT4_GROUP_SIZES or isinstance(self.group_size, bool):
            raise ValueError(f"group_size must be one of {', '.join(map(str, INT4_GROUP_SIZES))}, "
                             f"got {self.group_size!r}")


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


def quantize_int4_weight_only(model: nn.Module, group_size: int) -> nn.Module:
    """The model in bf16 with every linear layer the packed int4 CPU kernel takes in int4 weight-only
    (torchao); a TechniqueError when no layer fits, a MissingPackage error without torchao."""
    from autocompress.errors import MissingPackage, TechniqueError

    try:  # (torchao's import-time log lines are dropped: autocompress.log_noise)
        from torchao.quantization import quantize_
        try:  # torchao >= 0.18: the CPU layout's workflow is a prototype
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

            config = PrototypeInt4WeightOnlyConfig(group_size=group_size)
        except ImportError:  # torchao 0.14-0.17
            from torchao.quantization import Int4WeightOnlyConfig

            config = Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="opaque")
    except ImportError as exc:
        raise MissingPackage.for_import(exc, "quantization to int4") from exc

    def packable(module: nn.Module, _path: str) -> bool:
        # A module shared by several layers (ffn_sharing, layer_sharing) is met once per path: packed the first time.
        return (isinstance(module, nn.Linear) and module.in_features % group_size == 0
                and module.out_features % INT4_OUT_MULTIPLE == 0 and type(module.weight.data) is torch.Tensor)

    if not any(packable(module, path) for path, module in model.named_modules()):
        raise TechniqueError("quantization", f"int4 packs no linear layer of this model: none has an input "
                             f"width that is a multiple of group_size {group_size} and an output width that is "
                             f"a multiple of {INT4_OUT_MULTIPLE}")
    model = model.to(torch.bfloat16)
    quantize_(model, config, filter_fn=packable)
    return model


def static_int8_request(model: nn.Module, config: QuantizationConfig, context: ApplyContext) -> StaticInt8Request:
    """The float model with its calibration sample and fallback layers, for a runtime to quantize.

    Without task data (a saved candidate being reloaded) the request is returned unresolved;
    ``autocompress.deployment.restore_deployment`` fills it from the saved files.
    """
    list_path = context.adapter.layer_list_path()
    scopes = [f"{list_path}.{i}" for i in range(context.adapter.num_layers())]
    table = context.adapter.word_embeddings_path() if config.embeddings else None
    if context.data is None:
        return StaticInt8Request(model, scopes, calibration=None, float_layers=None, embedding_scope=table)
    texts = calibration_texts(context.data, config.calibration_size, context.seed)
    calibration = CalibrationSample.from_texts(context.tokenizer, texts, context.max_length, seed=context.seed)
    sensitivity = None
    float_layers: tuple[int, ...] = ()
    if config.fallback_layers:
        from autocompress.training import encode

        validation = encode(context.tokenizer, context.data.validation.head(SENSITIVITY_EXAMPLES), context.max_length)
        batches = [inputs for inputs, _ in validation.batches(32)]
        sensitivity = layer_sensitivity(model, scopes, batches, calibration.examples())
        float_layers = most_sensitive(sensitivity, min(config.fallback_layers, len(scopes)))
    return StaticInt8Request(model, scopes, calibration, float_layers, sensitivity, embedding_scope=table)


class Quantization(Technique):
    name = "quantization"
    stage = Stage.POST
    Config = QuantizationConfig
    description = ("int8 dynamic quantization of linear layers (optionally the word embeddings too), bf16 weights, "
                   "static int8 calibrated on training texts with sensitive layers kept in float, or int4 "
                   "weight-only (torchao)")
    references = {"int8 dynamic only": {"dtype": "int8"}, "bf16 only": {"dtype": "bf16"},
                  # No float fallback: the probe measures this exact step, and the starting points
                  # end in it (a sampled fallback in a warm-start plan cost more than it bought on
                  # OpenVINO: 0.64x the uncompressed teacher in static int8, RESULTS.md).
                  "int8 static only": {"dtype": "int8-static", "fallback_layers": 0},
                  "int4 weight-only only": {"dtype": "int4", "group_size": 32}}
    # Each of the other fields means something for one dtype only: the search draws it only then.
    conditions = {"embeddings": {"dtype": ("int8",)}, "fallback_layers": {"dtype": ("int8-static",)},
                  "calibration_size": {"dtype": ("int8-static",)}, "group_size": {"dtype": ("int4",)}}

    def apply(self, model, config: QuantizationConfig, context: ApplyContext):
        if config.dtype == "bf16":
            return model.to(torch.bfloat16)
        if config.dtype == "int8-static":
            return static_int8_request(model.eval(), config, context)
        if config.dtype == "int4":
            return quantize_int4_weight_only(model, config.group_size)
        return quantize_int8_dynamic(model, context.adapter.word_embeddings_path() if config.embeddings else None)


@hookimpl
def autocompress_register_techniques(register):
    register.add(Quantization)
