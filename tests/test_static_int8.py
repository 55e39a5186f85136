"""Static int8 with calibration: training texts only, accuracy-aware fallback, save/reload/export."""

import copy

import onnx
import pytest
import torch

from autocompress import load_pretrained
from autocompress.arch import adapter_for
from autocompress.data import TaskData, TextDataset
from autocompress.deployment import (
    CALIBRATION_FILE,
    DEPLOYMENT_FILE,
    StaticInt8Request,
    calibration_texts,
    restore_deployment,
    save_deployment,
)
from autocompress.errors import ExportError
from autocompress.int8_sensitivity import layer_sensitivity, most_sensitive
from autocompress.model_io import save_candidate
from autocompress.onnx_export import compare_with_torch, export_onnx, nodes_under
from autocompress.plugin_manager import build_host
from autocompress.plugins.cpu_target import CpuTarget
from autocompress.plugins.quantization import Quantization
from autocompress.technique import ApplyContext, Plan, PlanStep, Stage
from autocompress.testing import TechniqueContract
from autocompress.testing.target_contract import trained_tiny

HOST = build_host(autoload=False)


class TestStaticInt8Contract(TechniqueContract):
    technique = Quantization
    mild_config = {"dtype": "int8-static", "calibration_size": 16}
    strong_config = {"dtype": "int8-static", "fallback_layers": 1, "calibration_size": 16}
    bad_configs = [{"dtype": "int8-static", "fallback_layers": -1}, {"dtype": "int8-static", "fallback_layers": 1.5},
                   {"dtype": "int8-static", "calibration_size": 0}]
    # In PyTorch the request runs its float model; a runtime target quantizes it (tested below).
    reduces_parameters = reduces_memory = reduces_latency = False


def _split_data() -> TaskData:
    """Three splits whose texts cannot be confused: train uses the words w0-w19, validation
    w20-w29, test w30-w39 (all in the tiny tokenizer's vocabulary)."""
    def split(words, n):
        texts = [f"the film w{words[i % len(words)]} w{words[(i // len(words)) % len(words)]} was good"
                 for i in range(n)]
        return TextDataset(texts, [i % 2 for i in range(n)])
    return TaskData(split(range(0, 20), 60), split(range(20, 30), 20), split(range(30, 40), 20), ["neg", "pos"])


TRAIN_WORDS = {f"w{i}" for i in range(20)}


def _static(model, tokenizer, data, **values):
    config = Quantization.make_config({"dtype": "int8-static", **values})
    context = ApplyContext(adapter=adapter_for(model, HOST.architectures), tokenizer=tokenizer, data=data,
                           max_length=32)
    return Quantization().apply(copy.deepcopy(model), config, context)


def test_calibration_texts_are_a_seeded_sample_of_the_training_split_only():
    data = _split_data()
    sample = calibration_texts(data, 25, seed=3)
    assert len(sample) == 25 and len(set(sample)) == 25
    assert set(sample) <= set(data.train.texts)
    assert not set(sample) & (set(data.validation.texts) | set(data.test.texts))
    assert calibration_texts(data, 25, seed=3) == sample and calibration_texts(data, 25, seed=4) != sample
    assert len(calibration_texts(data, 500, seed=0)) == 60  # never padded out with other splits


def test_the_request_is_calibrated_on_training_texts(tmp_path):
    trained = trained_tiny()
    data = _split_data()
    request = _static(trained.model, trained.tokenizer, data, calibration_size=16)
    assert isinstance(request, StaticInt8Request) and request.calibration.split == "train"
    decoded = {trained.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
               for ids, mask in zip(request.calibration.input_ids, request.calibration.attention_mask, strict=True)}
    assert len(decoded) == 16
    words = {word for text in decoded for word in text.split() if word.startswith("w") and word != "was"}
    assert words and words <= TRAIN_WORDS, decoded
    assert request.float_layers == () and request.sensitivity is None  # no fallback asked: nothing measured


def _sensitive_layer(model, layer: int):
    """Make one layer's FFN output projection fragile under int8: one huge weight per row leaves the
    others a handful of int8 steps."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.bert.encoder.layer[layer].output.dense.weight[:, 0] *= 300.0
    return model


def test_sensitivity_finds_the_layer_int8_hurts_most():
    trained = trained_tiny()
    model = _sensitive_layer(trained.model, 1)
    scopes = [f"bert.encoder.layer.{i}" for i in range(3)]
    batches = [inputs for inputs, _ in trained.evaluation.batches(16)]
    calibration = [inputs for inputs, _ in trained.evaluation.batches(8)]
    static = layer_sensitivity(model, scopes, batches, calibration)
    dynamic = layer_sensitivity(model, scopes, batches)
    for scores in (static, dynamic):
        assert most_sensitive(scores, 1) == (1,), scores
        assert scores[1] > 10 * max(scores[0], scores[2], 1e-9)
    assert most_sensitive([0.1, 0.3, 0.2], 2) == (1, 2) and most_sensitive([0.1, 0.3], 0) == ()


@pytest.mark.parametrize("fallback", [1, 0])
def test_fallback_keeps_the_named_layers_in_float_in_the_onnx_graph(fallback, tmp_path):
    trained = trained_tiny()
    model = _sensitive_layer(trained.model, 1)
    request = _static(model, trained.tokenizer, trained.data, fallback_layers=fallback, calibration_size=32)
    assert request.float_layers == ((1,) if fallback else ())
    path = export_onnx(request, tmp_path / "static.onnx", seq_len=16)
    graph = onnx.load(str(path))
    producers = {out: node.op_type for node in graph.graph.node for out in node.output}
    for layer, scope in enumerate(request.layer_scopes):
        matmuls = [n for n in graph.graph.node if n.name in set(nodes_under(graph, [scope], "MatMul"))]
        int8 = [n.name for n in matmuls if producers.get(n.input[1]) == "DequantizeLinear"]
        assert len(matmuls) == 8  # q, k, v, attention output, FFN in/out + the two attention products
        assert len(int8) == (0 if layer in request.float_layers else 6), (layer, int8)
    assert compare_with_torch(request, path, next(trained.evaluation.batches(8))[0])["int8"]


def test_fallback_keeps_the_named_layers_in_float_in_the_openvino_model():
    from autocompress.openvino_runtime import convert, quantized_matmuls

    trained = trained_tiny()
    request = _static(_sensitive_layer(trained.model, 1), trained.tokenizer, trained.data, fallback_layers=1,
                      calibration_size=32)
    quantized = {name.split("/")[0].removeprefix("__module.") for name in quantized_matmuls(convert(request).model)}
    for layer, scope in enumerate(request.layer_scopes):
        linears = {f"{scope}.{part}" for part in ("attention.self.query", "attention.self.key", "attention.self.value",
                                                   "attention.output.dense", "intermediate.dense", "output.dense")}
        assert (linears & quantized) == (set() if layer == 1 else linears), layer
    everything = {name.split("/")[0] for name in quantized_matmuls(
        convert(_static(trained.model, trained.tokenizer, trained.data, calibration_size=32)).model)}
    assert all(any(f"layer.{i}." in name for name in everything) for i in range(3))  # without fallback: every layer


def test_a_static_candidate_saves_reloads_and_exports_to_onnx(tmp_path):
    trained = trained_tiny()
    request = _static(_sensitive_layer(trained.model, 1), trained.tokenizer, trained.data, fallback_layers=1,
                      calibration_size=16)
    step = PlanStep(Quantization, Quantization.make_config({"dtype": "int8-static", "fallback_layers": 1,
                                                            "calibration_size": 16}))
    directory = save_candidate(tmp_path / "candidate", request.model, trained.tokenizer,
                               post_steps=Plan.build([step]).to_manifest(Stage.POST))
    save_deployment(directory, request)
    assert (directory / DEPLOYMENT_FILE).is_file() and (directory / CALIBRATION_FILE).is_file()
    reloaded, _ = load_pretrained(directory)
    assert isinstance(reloaded, StaticInt8Request) and reloaded.unresolved_reason() is None
    assert reloaded.float_layers == (1,) and reloaded.layer_scopes == request.layer_scopes
    assert torch.equal(reloaded.calibration.input_ids, request.calibration.input_ids)
    assert reloaded.sensitivity == pytest.approx(request.sensitivity)
    path = export_onnx(reloaded, tmp_path / "model.onnx", seq_len=16)
    assert sum(n.op_type == "DequantizeLinear" for n in onnx.load(str(path)).graph.node) > 0

    (directory / CALIBRATION_FILE).unlink()  # a directory without the sample: refused, saying what is missing
    bare, _ = load_pretrained(directory)
    assert isinstance(bare, StaticInt8Request) and bare.unresolved_reason() is not None
    with pytest.raises(ExportError, match="calibration sample"):
        export_onnx(bare, tmp_path / "bare.onnx", seq_len=16)
    assert restore_deployment(directory, trained.model) is trained.model  # not a request: nothing to restore


def test_the_cpu_target_refuses_static_int8_naming_the_targets_that_run_it():
    trained = trained_tiny()
    request = _static(trained.model, trained.tokenizer, trained.data, calibration_size=8)
    with pytest.raises(ExportError, match="onnxruntime or --target openvino"):
        CpuTarget().runtime(request)
