"""Export a sequence classifier to ONNX, run it under ONNX Runtime, and check it against PyTorch.

The export uses ``torch.onnx.export(..., dynamo=True)``: the ``torch.export``-based exporter,
the default since torch 2.9 (the TorchScript one, ``dynamo=False``, is deprecated). It needs the
``onnx`` and ``onnxscript`` packages; running the result needs ``onnxruntime``. All three are
the ``onnx`` extra: ``pip install "autocompress[onnx]"``.

The graph takes ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when the model's
``forward`` accepts them), int64, shape (batch, sequence), both axes dynamic, and returns
``logits`` (batch, labels).

int8 candidates (``torch.ao`` dynamic-quantized linears, weight-only int8 embeddings) have no
translation in the exporter, so they take ONNX Runtime's own route: a float twin (the int8
weights dequantized) is exported, then ``onnxruntime.quantization.quantize_dynamic`` turns its
constant-weight MatMuls (and, when the embedding table was int8, its Gather) back into int8:
``MatMulInteger`` kernels with activations quantized per batch, the scheme torch's dynamic int8
uses. The two runtimes' int8 kernels round differently (torch's x86 kernels use 7-bit
activations), so their logits differ by a few hundredths to tenths; a search on the ONNX Runtime
target therefore scores accuracy with ONNX Runtime itself (``OnnxRuntimeModule``).

Static int8 candidates (``autocompress.deployment.StaticInt8Request``: the float model, a
calibration sample of training texts, the layers to keep in float) are exported in float, then
quantized by ``onnxruntime.quantization.quantize_static`` in QDQ format: weights int8 per
output channel, activations uint8 with scales calibrated on the sample (weights 7-bit on a CPU
without VNNI, as ONNX Runtime advises), constant-weight MatMuls only; the MatMuls of the float
layers are found by the module path the exporter records on every node
(``pkg.torch.onnx.name_scopes``) and left in float.

What cannot be exported, and says so with an ``ExportError`` rather than a traceback: bf16/fp16
weights (ONNX Runtime's CPU provider has no kernels for them), quantized module types other
than the two above, and a static int8 request without its calibration sample.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.deployment import DeploymentRequest, StaticInt8Request, unwrap
from autocompress.errors import ExportError
from autocompress.log_noise import TORCHVISION_MISSING, dropped

#: What ``pip install "autocompress[onnx]"`` installs, by import name -> distribution name.
ONNX_PACKAGES = {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"}
INSTALL_HINT = 'pip install "autocompress[onnx]"'
OUTPUT = "logits"
#: Largest |ONNX Runtime - PyTorch| logit difference accepted by ``check_onnx`` (float32 kernels
#: differ in summation order; real errors are orders of magnitude larger).
TOLERANCE = 1e-4
#: int8 graphs: ONNX Runtime's int8 kernels round unlike torch's (whose x86 kernels quantize
#: activations to 7 bits), so logits may differ by this fraction of the largest one. On the demo
#: model the two int8 runtimes differ by about 0.2 on logits up to 2 (float vs torch int8: 0.12).
INT8_RELATIVE_TOLERANCE = 0.25
CHECK_TEXTS = ("the film was good", "a dull boring plot and a weak cast", "it was fine", "great music")


def missing_packages(modules: Sequence[str] = tuple(ONNX_PACKAGES)) -> list[str]:
    """Distributions among ``modules`` (import names) that are not installed."""
    return [ONNX_PACKAGES.get(m, m) for m in modules if importlib.util.find_spec(m) is None]


def require(*modules: str) -> None:
    """Raise ExportError naming what to install when any of ``modules`` is missing."""
    missing = missing_packages(modules)
    if missing:
        raise ExportError(f"ONNX support needs {', '.join(missing)}, which is not installed: run {INSTALL_HINT} "
                          f"(or pip install {' '.join(missing)})")


def input_names(model: nn.Module) -> list[str]:
    """The graph inputs for ``model``: token_type_ids only when its forward takes them and its config
    declares token types (``type_vocab_size``), where zeros mean what no token types mean. GPT-2's
    forward takes them too, but adds their rows of the word embeddings: zeros would not be 'none'."""
    names = ["input_ids", "attention_mask"]
    model = unwrap(model)
    if "token_type_ids" in inspect.signature(model.forward).parameters and \
            hasattr(getattr(model, "config", None), "type_vocab_size"):
        names.append("token_type_ids")
    return names


def _quantized(module: nn.Module) -> bool:
    return type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized"))


def _float_equivalent(module: nn.Module) -> tuple[nn.Module, str] | None:
    """The float module an int8 one stands for (weights dequantized) and the ONNX op type that
    ONNX Runtime quantizes back for it; None for a module type with no such translation."""
    from torch.ao.nn.quantized import Embedding as Int8Embedding
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    if isinstance(module, Int8Linear):
        weight, bias = module.weight().dequantize(), module.bias()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.weight.data.copy_(weight)
        if bias is not None:
            linear.bias.data.copy_(bias.detach())
        return linear, "MatMul"
    if isinstance(module, Int8Embedding):
        weight = module.weight().dequantize()
        return nn.Embedding.from_pretrained(weight, freeze=True), "Gather"
    return None


def float_twin(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A float copy of an int8 (``torch.ao``) model, weights dequantized, and the ONNX op types that
    were int8 (``MatMul`` for linears, ``Gather`` for an embedding table); ``model`` itself and []
    when nothing is int8. Raises ExportError for an int8 module type with no float equivalent."""
    int8 = _top_quantized(model)
    if not int8:
        return model, []
    twin, op_types = copy.deepcopy(model), set()
    for module_path, module in int8:
        equivalent = _float_equivalent(module)
        if equivalent is None:
            raise ExportError(f"cannot export to ONNX: {unexportable_reason(model)}")
        twin.set_submodule(module_path, equivalent[0])
        op_types.add(equivalent[1])
    return twin, sorted(op_types)


def int8_embedding_paths(model: nn.Module) -> list[str]:
    """Module paths of the int8 (``torch.ao``) embedding tables of ``model``."""
    from torch.ao.nn.quantized import Embedding as Int8Embedding

    return [path for path, module in _top_quantized(model) if isinstance(module, Int8Embedding)]


def _top_quantized(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """int8 modules of ``model``, outermost only (their packed-parameter children are skipped)."""
    found: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if _quantized(module) and not any(path.startswith(f"{outer}.") for outer, _ in found):
            found.append((path, module))
    return found


def unexportable_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot be exported to ONNX and run by ONNX Runtime on a CPU, or None."""
    if isinstance(model, DeploymentRequest):
        return model.unresolved_reason() or unexportable_reason(model.model)
    for path, module in _top_quantized(model):
        if _float_equivalent(module) is None:
            return (f"module '{path}' is a quantized {type(module).__module__}.{type(module).__name__}, which "
                    "has no ONNX translation here (int8 dynamic linears and int8 embeddings have); measure it on "
                    "the 'cpu' target")
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, torch.Tensor) and tensor.dtype in (torch.bfloat16, torch.float16):
            return (f"tensor '{name}' is {str(tensor.dtype).removeprefix('torch.')}; ONNX Runtime's CPU provider "
                    "has no kernels for it; measure bf16/fp16 candidates on the 'cpu' target")
    return None


def example_inputs(model: nn.Module, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (no special tokens), a full attention mask and zero token types."""
    from autocompress.measure import dummy_inputs, vocab_size_of

    inputs = dummy_inputs(batch_size, seq_len, vocab_size_of(model), seed=seed)
    if "token_type_ids" in input_names(model):
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    return inputs


def export_onnx(model: nn.Module, path: Path, seq_len: int, opset: int | None = None) -> Path:
    """Write ``model`` (a sequence classifier) to ``path`` as ONNX; returns ``path``.

    ``seq_len`` is the length of the example used to trace; batch and sequence stay dynamic.
    ``opset`` defaults to the exporter's recommended version. Raises ExportError naming the
    package to install, the module that cannot be exported, or the exporter's own message.
    """
    require("onnx", "onnxscript")
    reason = unexportable_reason(model)
    if reason is not None:
        raise ExportError(f"cannot export to ONNX: {reason}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    static = model if isinstance(model, StaticInt8Request) else None
    twin, op_types = float_twin(unwrap(model))
    if static is None and not op_types:
        _export_float(twin, path, seq_len, opset)
        fold_weight_transposes(path)
        share_identical_initializers(path)
        return path
    require("onnxruntime")
    float_path = path.with_name(f"{path.stem}.float{path.suffix}")
    try:
        _export_float(twin, float_path, seq_len, opset)
        # Constant weights for the quantizer; copies of shared weights are merged once quantized.
        fold_weight_transposes(float_path)
        _clear_value_info(float_path)
        if static is not None:
            _quantize_static(float_path, path, static)
        else:
            _quantize_back(float_path, path, sorted(op_types))
    finally:
        float_path.unlink(missing_ok=True)
    share_identical_initializers(path)
    return path


def _clear_value_info(path: Path) -> None:
    """Drop the exporter's recorded intermediate shapes (traced at batch 2): they clash with the
    quantizers' own shape inference, which infers them again."""
    import onnx

    graph = onnx.load(str(path))
    del graph.graph.value_info[:]
    onnx.save(graph, str(path))


@contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizers log advice (run pre-processing) on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def node_scopes(node: Any) -> list[str]:
    """Module paths an exported ONNX node came from (outermost first), from the exporter's metadata."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(scope) for scope in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def nodes_under(graph: Any, scopes: Sequence[str], op_type: str) -> list[str]:
    """Names of ``op_type`` nodes of ``graph`` (an ONNX ModelProto) made by modules at or below ``scopes``."""
    found = []
    for node in graph.graph.node:
        if node.op_type != op_type:
            continue
        paths = node_scopes(node)
        if any(path == scope or path.startswith(f"{scope}.") for path in paths for scope in scopes):
            found.append(node.name)
    return found


def _calibration_reader(names: Sequence[str], request: StaticInt8Request) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over the request's sample, one example a batch."""
    from onnxruntime.quantization import CalibrationDataReader

    class SampleReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._examples = iter(list(request.calibration.examples()))

        def get_next(self) -> dict[str, np.ndarray] | None:
            example = next(self._examples, None)
            if example is None:
                return None
            feed = {name: example[name].numpy() for name in ("input_ids", "attention_mask")}
            if "token_type_ids" in names:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            return feed

    return SampleReader()


def _quantize_static(float_path: Path, path: Path, request: StaticInt8Request) -> None:
    """ONNX Runtime's static QDQ int8 of ``float_path``'s weight MatMuls, calibrated on the request's
    sample, the MatMuls of its float layers excluded."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from autocompress.cpu import cpu_features

    request.require_resolved("static int8 under ONNX Runtime")
    graph = onnx.load(str(float_path))
    names = [i.name for i in graph.graph.input]
    excluded = nodes_under(graph, request.float_scopes(), "MatMul") if request.float_scopes() else []
    # Weight MatMuls only (the QDQ quantizer ignores MatMulConstBOnly): attention's activation
    # products stay float, as in dynamic int8 and in the sensitivity simulation.
    weights = {tensor.name for tensor in graph.graph.initializer}
    excluded += [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]
    op_types = ["MatMul"]
    if request.embedding_scope is not None:
        op_types.append("Gather")  # the word-embedding table only: other Gathers index activations
        tables = set(nodes_under(graph, [request.embedding_scope], "Gather"))
        excluded += [n.name for n in graph.graph.node if n.op_type == "Gather" and n.name not in tables]
    reader = _calibration_reader(names, request)
    # ONNX Runtime's advice for x86: uint8 activations, int8 weights; 7-bit weights without VNNI.
    reduce_range = cpu_features().int8_acceleration == "none"
    with _quiet_root_logger():
        try:
            quantize_static(float_path, path, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                            per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                            extra_options={"MatMulConstBOnly": True})
        except Exception as exc:
            raise ExportError(f"ONNX Runtime's static int8 quantization of {float_path.name} failed: "
                              f"{type(exc).__name__}: {exc}") from exc


def _quantize_back(float_path: Path, path: Path, op_types: list[str]) -> None:
    """ONNX Runtime's dynamic int8 quantization of ``float_path``'s constant-weight ``op_types``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        try:
            quantize_dynamic(float_path, path, op_types_to_quantize=op_types, weight_type=QuantType.QInt8,
                             extra_options={"MatMulConstBOnly": True})
        except Exception as exc:
            raise ExportError(f"ONNX Runtime's int8 quantization of {float_path.name} failed: "
                              f"{type(exc).__name__}: {exc}") from exc


def _export_float(model: nn.Module, path: Path, seq_len: int, opset: int | None) -> Path:
    model.eval()
    names = input_names(model)
    # Size 1 (or 0) axes are specialised by torch.export, so trace with 2 x max(seq_len, 2).
    inputs = example_inputs(model, 2, max(2, seq_len))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        with logits_only(model), warnings.catch_warnings(), torch.inference_mode(), dropped(TORCHVISION_MISSING):
            # The exporter warns about internals we do not control (pytree, axis renaming).
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (), kwargs=inputs, input_names=names, output_names=[OUTPUT], opset_version=opset,
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names}, dynamo=True,
                external_data=False, verbose=False,
            )
            program.save(str(path))
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: {first_line}") from exc
    return path


@contextmanager
def logits_only(model: nn.Module) -> Iterator[None]:
    """``model`` without its key/value cache output while it is traced or exported (a decoder's
    ``use_cache`` off, then restored): the graph's one output is the logits."""
    config = getattr(model, "config", None)
    cached = getattr(config, "use_cache", False) is True
    if cached:
        config.use_cache = False
    try:
        yield
    finally:
        if cached:
            config.use_cache = True


def fold_weight_transposes(path: Path) -> int:
    """Replace every ``Transpose`` of a constant in the graph at ``path`` by its result; returns how many.

    The exporter folds a linear's transposed weight into a constant, except (above a size) when
    the weight is read at several places, as in cross-layer parameter sharing: that graph then
    transposes the weight at every run, and ONNX Runtime's int8 quantizer, which only quantizes
    MatMuls with a constant operand, leaves those products in float.
    """
    import onnx
    from onnx import numpy_helper

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    constants = {initializer.name: initializer for initializer in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in constants:
            array = numpy_helper.to_array(constants[node.input[0]])
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array.transpose(perm)),
                                                             name=node.output[0]))
            folded.append(node)
    if not folded:
        return 0
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    kept = [initializer for initializer in graph.initializer if initializer.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(graph_model, str(path))
    return len(folded)


def share_identical_initializers(path: Path) -> int:
    """Store each distinct constant of the graph at ``path`` once; returns the bytes saved.

    A shared module's weights (cross-layer parameter sharing) are folded into one constant per use
    (``fold_weight_transposes``); identical initializers (same type, shape and bytes) become one,
    read by every node that read a copy, so the file, like the PyTorch model, holds them once.
    """
    import hashlib

    import onnx

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    canonical: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    kept, saved = [], 0
    outputs = {output.name for output in graph.output}
    for initializer in graph.initializer:
        anonymous = onnx.TensorProto()
        anonymous.CopyFrom(initializer)
        anonymous.name = ""
        key = (initializer.data_type, tuple(initializer.dims),
               hashlib.sha256(anonymous.SerializeToString(deterministic=True)).hexdigest())
        if key in canonical and initializer.name not in outputs:
            renamed[initializer.name] = canonical[key]
            saved += initializer.ByteSize()
        else:
            canonical.setdefault(key, initializer.name)
            kept.append(initializer)
    if not renamed:
        return 0
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(graph_model, str(path))
    return saved


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU inference session; ``threads`` fixes the intra-op thread count."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load {path}: {type(exc).__name__}: {exc}") from exc


def session_feed(session: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays ``session`` takes, as int64 numpy, from tensors/arrays keyed by input name.

    Extra keys are ignored; a missing ``token_type_ids`` is filled with zeros.
    """
    feed = {}
    for declared in session.get_inputs():
        if declared.name in inputs:
            value = inputs[declared.name]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feed[declared.name] = array.astype(np.int64, copy=False)
        elif declared.name == "token_type_ids":
            feed[declared.name] = np.zeros_like(np.asarray(inputs["input_ids"]), dtype=np.int64)
        else:
            raise ExportError(f"the ONNX graph needs input '{declared.name}', which was not given")
    return feed


def encoder_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The inputs an exported encoder graph takes, as a classifier's ``forward`` receives them (an
    attention mask of ones when none is given; token types only when given)."""
    inputs = {"input_ids": input_ids,
              "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    return inputs


class OnnxRuntimeModule(nn.Module):
    """An exported graph run by ONNX Runtime, called like the classifier it came from (logits only)."""

    def __init__(self, session: Any):
        super().__init__()
        self.session = session

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> SimpleNamespace:
        inputs = encoder_inputs(input_ids, attention_mask, token_type_ids)
        return SimpleNamespace(logits=torch.from_numpy(onnx_logits(self.session, inputs)))


def onnx_logits(path_or_session: Path | Any, inputs: Mapping[str, Any]) -> np.ndarray:
    """Logits computed by ONNX Runtime for encoded ``inputs`` (tokenizer output, tensors or arrays)."""
    session = onnx_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    return session.run([OUTPUT], session_feed(session, inputs))[0]


def onnx_predictions(path_or_session: Path | Any, inputs: Mapping[str, Any]) -> np.ndarray:
    """Predicted class ids (argmax of the logits) computed by ONNX Runtime."""
    return onnx_logits(path_or_session, inputs).argmax(axis=-1)


def compare_with_torch(model: nn.Module, path: Path, inputs: Mapping[str, torch.Tensor],
                       tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Run both on ``inputs``; raise ExportError if any logit differs by more than ``tolerance``
    or a prediction differs.

    An int8 model's graph runs ONNX Runtime's int8 kernels, which round unlike torch's: there the
    tolerance is ``INT8_RELATIVE_TOLERANCE`` of the largest logit (if larger), and a prediction
    only has to agree where PyTorch's top two logits are further apart than twice the tolerance.
    A token classifier's logits (one row per token) are compared on the real (unpadded) tokens, and
    ``predictions`` counts tokens (``unit``), not texts.
    """
    feedable = {k: v for k, v in inputs.items() if k in input_names(model)}
    with torch.inference_mode():
        expected = model(**feedable).logits.float().numpy()
    actual = onnx_logits(path, inputs)
    per_token = expected.ndim == 3
    real = (np.asarray(inputs["attention_mask"]).astype(bool) if per_token and "attention_mask" in inputs
            else np.ones(expected.shape[:-1], dtype=bool))
    difference = float(np.abs(actual - expected)[real].max())
    int8 = bool(_top_quantized(unwrap(model))) or isinstance(model, StaticInt8Request)
    clear = real
    if int8:
        tolerance = max(tolerance, INT8_RELATIVE_TOLERANCE * float(np.abs(expected).max()))
        top_two = np.sort(expected, axis=-1)[..., -2:]  # per example, or per token (token classification)
        clear = real & (top_two[..., 1] - top_two[..., 0] > 2 * tolerance)
    same = bool((actual.argmax(-1) == expected.argmax(-1))[clear].all())
    if difference > tolerance or not same:
        raise ExportError(f"{path}: ONNX Runtime's logits differ from PyTorch's by up to {difference:.3g} "
                          f"(tolerance {tolerance:g}{', int8 kernels' if int8 else ''}; "
                          f"predictions {'agree' if same else 'differ'})")
    return {"examples": int(expected.shape[0]), "max_abs_logit_difference": difference, "tolerance": tolerance,
            "int8": int8, "predictions_compared": int(clear.sum()), "predictions_agree": same,
            "predictions": int(real.sum()), "unit": "tokens" if per_token else "texts"}


def check_onnx(model: nn.Module, tokenizer: Any, path: Path, texts: Sequence[str] = CHECK_TEXTS,
               tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Tokenise ``texts`` with ``tokenizer`` and check ONNX Runtime against PyTorch (see compare_with_torch)."""
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True)
    return compare_with_torch(model, path, dict(encoded), tolerance)
