"""Convert a sequence classifier to OpenVINO, quantize it with NNCF, and run it on the CPU plugin.

**Conversion**: ``openvino.convert_model(model, example_input=...)`` straight from PyTorch (its
TorchScript-tracing frontend), not through the ONNX export the onnxruntime target uses: it
converts every built-in technique's model (low-rank ``nn.Sequential`` factors and factorised
embeddings included, checked by tests), takes about a third of the time of the dynamo ONNX
export, keeps both axes dynamic, and names every node after the module it came from
(``__module.bert.encoder.layer.3.attention.self.query/aten::linear/MatMul``), which is how
NNCF's ignored scope keeps chosen layers in float. ``torch.ao`` int8 modules have no translation,
so an int8 candidate converts its float twin (weights dequantized), as the ONNX export does.

**Precision** (``hints.inference_precision``): f32, or bf16 for a candidate whose weights are
bf16 (its float32 copy is converted and the CPU plugin computes in bf16). The CPU plugin's default
is bf16 wherever the CPU has it, so f32 is always asked for explicitly; bf16 on a CPU without it
(no ``BF16`` in the plugin's ``OPTIMIZATION_CAPABILITIES``) is refused.

**int8**: a static int8 request (``autocompress.deployment.StaticInt8Request``) is quantized by
``nncf.quantize`` (transformer preset: SmoothQuant, fast bias correction) calibrated on the
request's training texts, its float layers in NNCF's ignored scope; a dynamic int8 candidate's
float twin gets int8 weights from ``nncf.compress_weights`` (INT8_ASYM, per channel), which the
CPU plugin runs with activations quantized at run time (``DYNAMIC_QUANTIZATION_GROUP_SIZE``).

Both tools send usage telemetry by default (Google Analytics, on by default without a consent
file); autocompress turns it off for its own calls (``_telemetry_off``). Everything here needs the
``openvino`` extra: ``pip install "autocompress[openvino]"``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import itertools
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.deployment import StaticInt8Request, unwrap
from autocompress.errors import ExportError
from autocompress.log_noise import LOSS_TYPE_NONE, dropped

#: What ``pip install "autocompress[openvino]"`` installs, by import name -> distribution name.
OPENVINO_PACKAGES = {"openvino": "openvino", "nncf": "nncf"}
INSTALL_HINT = 'pip install "autocompress[openvino]"'
F32, BF16 = "f32", "bf16"


def missing_packages() -> list[str]:
    """Distributions of the openvino extra that are not installed."""
    return [dist for module, dist in OPENVINO_PACKAGES.items() if importlib.util.find_spec(module) is None]


def require() -> None:
    """Raise ExportError naming what to install when openvino or nncf is missing."""
    missing = missing_packages()
    if missing:
        raise ExportError(f"OpenVINO support needs {', '.join(missing)}, which is not installed: run {INSTALL_HINT} "
                          f"(or pip install {' '.join(missing)})")


@contextlib.contextmanager
def _telemetry_off() -> Iterator[None]:
    """Inside: OpenVINO's converter and NNCF send no usage telemetry, write no consent file and
    print nothing.

    Both read it from the environment: ``openvino_telemetry`` declines in a CI job (``CI=true``),
    NNCF replaces its telemetry with a stub when ``NNCF_CI`` is set at import time. The variables
    are restored on exit, so the user's own later calls behave as they would without us.
    """
    saved = {name: os.environ.get(name) for name in ("CI", "NNCF_CI")}
    os.environ["CI"], os.environ["NNCF_CI"] = "true", "1"
    try:
        # NNCF draws progress bars on stdout (rich) whatever its log level: a search has its own.
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _openvino() -> Any:
    """``import openvino`` (its import initialises the converter's telemetry: done with it off)."""
    require()
    with _telemetry_off():
        import openvino
    return openvino


def _nncf() -> Any:
    with _telemetry_off():
        import nncf
    nncf.set_log_level(logging.ERROR)
    return nncf


def core() -> Any:
    """The process's ``openvino.Core`` (one is enough, and creating one loads the plugins)."""
    module = sys.modules[__name__]
    if getattr(module, "_core", None) is None:
        module._core = _openvino().Core()
    return module._core


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 natively on this CPU."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@dataclass
class Converted:
    """A candidate as OpenVINO runs it: the model, the inference precision, its weights' bytes."""

    model: Any  # openvino.Model
    precision: str
    weight_bytes: int
    input_names: tuple[str, ...]


def _example(model: nn.Module) -> dict[str, torch.Tensor]:
    from autocompress.onnx_export import example_inputs

    return dict(example_inputs(model, 2, 16))


def _convert(model: nn.Module) -> Any:
    from autocompress.onnx_export import logits_only

    ov = _openvino()
    model.eval()
    try:
        # (its tracer reads every attribute, a head-less submodule's loss too: LOSS_TYPE_NONE)
        with (_telemetry_off(), logits_only(model), warnings.catch_warnings(), torch.inference_mode(False),
              torch.no_grad(), dropped(LOSS_TYPE_NONE)):
            warnings.simplefilter("ignore")  # tracer warnings about shapes the frontend keeps dynamic
            return ov.convert_model(model, example_input=_example(model))
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"OpenVINO conversion of {type(model).__name__} failed: {type(exc).__name__}: "
                          f"{first_line}") from exc


def _scope_patterns(scopes: Sequence[str]) -> list[str]:
    """Node-name patterns of everything the modules at ``scopes`` made (see the module docstring)."""
    return [rf"__module\.{re.escape(scope)}[./].*" for scope in scopes]


def _dataset_items(request: StaticInt8Request, names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    items = []
    for example in request.calibration.examples():
        feed = {name: example[name].numpy() for name in ("input_ids", "attention_mask")}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        items.append(feed)
    return items


def _quantize_static(ov_model: Any, request: StaticInt8Request) -> Any:
    nncf = _nncf()
    names = [port.get_any_name() for port in ov_model.inputs]
    items = _dataset_items(request, names)
    ignored = nncf.IgnoredScope(patterns=_scope_patterns(request.float_scopes()), validate=False)
    try:
        with _telemetry_off():
            quantized = nncf.quantize(ov_model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(items), ignored_scope=ignored)
            if request.embedding_scope is not None:
                quantized = _compress_table(nncf, quantized, request.embedding_scope)
            return quantized
    except Exception as exc:
        raise ExportError(f"NNCF's static int8 quantization failed: {type(exc).__name__}: {exc}") from exc


def _compress_table(nncf: Any, ov_model: Any, table_scope: str) -> Any:
    """int8 weights for the word-embedding table alone (weight-only, per row)."""
    others = [op.get_friendly_name() for op in ov_model.get_ops()
              if op.get_type_name() in ("MatMul", "Gather") and not re.match(_scope_patterns([table_scope])[0],
                                                                             op.get_friendly_name())]
    return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM,
                                 ignored_scope=nncf.IgnoredScope(names=others, validate=False))


def _compress_dynamic(ov_model: Any, table_scopes: Sequence[str]) -> Any:
    """int8 weights for the MatMuls (and the embedding tables that were int8 in PyTorch)."""
    nncf = _nncf()
    patterns = _scope_patterns(table_scopes)
    tables = [op.get_friendly_name() for op in ov_model.get_ops() if op.get_type_name() == "Gather"
              and not any(re.match(pattern, op.get_friendly_name()) for pattern in patterns)]
    try:
        with _telemetry_off():
            return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM,
                                         ignored_scope=nncf.IgnoredScope(names=tables, validate=False))
    except Exception as exc:
        raise ExportError(f"NNCF's int8 weight compression failed: {type(exc).__name__}: {exc}") from exc


def _is_bf16(model: nn.Module) -> bool:
    return any(t.dtype == torch.bfloat16 for t in itertools.chain(model.parameters(), model.buffers()))


def weight_bytes(ov_model: Any, precision: str) -> int:
    """Bytes of the model's constants as the CPU plugin holds them: int8 weights as int8; float32
    weights at 2 bytes under bf16 precision (the plugin converts them when it compiles)."""
    total = 0
    for op in ov_model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        size = op.get_byte_size()
        if precision == BF16 and op.get_element_type().get_type_name() == "f32":
            size //= 2
        total += size
    return total


def convert(model: nn.Module) -> Converted:
    """``model`` (float, bf16, torch int8 or a static int8 request) as OpenVINO will run it."""
    require()
    from autocompress.onnx_export import float_twin, int8_embedding_paths

    if isinstance(model, StaticInt8Request):
        model.require_resolved("static int8 under OpenVINO")
    inner = unwrap(model)
    precision = F32
    if _is_bf16(inner):
        if not cpu_has_bf16():
            raise ExportError("this CPU has no native bf16 for OpenVINO (no BF16 in the CPU plugin's "
                              "OPTIMIZATION_CAPABILITIES); use int8 or float on this machine")
        inner, precision = copy.deepcopy(inner).float(), BF16
    twin, int8_ops = float_twin(inner)
    ov_model = _convert(twin)
    if isinstance(model, StaticInt8Request):
        ov_model = _quantize_static(ov_model, model)
    elif int8_ops:
        ov_model = _compress_dynamic(ov_model, int8_embedding_paths(inner))
    names = tuple(port.get_any_name() for port in ov_model.inputs)
    return Converted(ov_model, precision, weight_bytes(ov_model, precision), names)


def compile_model(converted: Converted, threads: int | None = None) -> Any:
    """The converted model compiled for the CPU plugin: its precision, latency mode, one stream,
    ``threads`` inference threads (all cores when None)."""
    _openvino()
    import openvino.properties as props
    import openvino.properties.hint as hints

    config: dict[str, Any] = {hints.inference_precision: converted.precision,
                              hints.performance_mode: hints.PerformanceMode.LATENCY, props.num_streams: 1}
    if threads is not None:
        config[props.inference_num_threads] = threads
    try:
        return core().compile_model(converted.model, "CPU", config)
    except Exception as exc:
        raise ExportError(f"OpenVINO cannot compile the model for the CPU: {type(exc).__name__}: {exc}") from exc


def feed(names: Sequence[str], inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """int64 arrays for the model's ``names`` from tensors/arrays; a missing token_type_ids is zeros."""
    arrays = {}
    for name in names:
        if name in inputs:
            value = inputs[name]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            arrays[name] = array.astype(np.int64, copy=False)
        elif name == "token_type_ids":
            arrays[name] = np.zeros_like(np.asarray(inputs["input_ids"]), dtype=np.int64)
        else:
            raise ExportError(f"the OpenVINO model needs input '{name}', which was not given")
    return arrays


class OpenVinoModule(nn.Module):
    """A compiled OpenVINO model, called like the classifier it came from (logits only)."""

    def __init__(self, compiled: Any, input_names: Sequence[str]):
        super().__init__()
        self.compiled = compiled
        self.input_names = tuple(input_names)
        self.request = compiled.create_infer_request()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> SimpleNamespace:
        from autocompress.onnx_export import encoder_inputs

        result = self.request.infer(feed(self.input_names, encoder_inputs(input_ids, attention_mask, token_type_ids)))
        return SimpleNamespace(logits=torch.from_numpy(np.array(result[self.compiled.output(0)])))


def quantized_matmuls(ov_model: Any) -> set[str]:
    """Names of the MatMuls that run in int8: fed by a FakeQuantize or by int8/uint8 constants
    (through the Convert/Subtract/Multiply/Reshape/Transpose chain of a compressed weight)."""
    low_precision = {"i8", "u8", "i4", "u4"}
    passthrough = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose"}

    def int8_source(node: Any, depth: int = 0) -> bool:
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_element_type().get_type_name() in low_precision
        if kind in passthrough and depth < 6:
            return any(int8_source(value.get_node(), depth + 1) for value in node.input_values())
        return False

    return {op.get_friendly_name() for op in ov_model.get_ops() if op.get_type_name() == "MatMul"
            and any(int8_source(value.get_node()) for value in op.input_values())}
