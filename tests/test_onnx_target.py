"""ONNX export, ONNX Runtime's agreement with PyTorch, and the onnxruntime target."""

import copy
import gc
import json
import sys
from collections import Counter

import numpy as np
import onnx
import optuna
import pandas as pd
import pytest
import torch

from autocompress.errors import ExportError, InputError
from autocompress.measure import MeasureSettings, parameter_count
from autocompress.onnx_export import (
    check_onnx,
    compare_with_torch,
    export_onnx,
    onnx_logits,
    onnx_predictions,
    onnx_session,
)
from autocompress.plugin_manager import build_host
from autocompress.plugins.onnx_target import OnnxRuntimeTarget
from autocompress.testing import tiny_model, tiny_tokenizer, write_tiny_task

# onnx, onnxscript and onnxruntime come with the dev extra (README set-up), so nothing here skips.

SETTINGS = MeasureSettings(batch_size=2, seq_len=16, threads=1, warmup=1, repeats=3)


def _inputs(batch, length, seed=1, vocab=128):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0  # padding in one row: the mask must reach the graph
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family, names", [("bert", ["input_ids", "attention_mask", "token_type_ids"]),
                                           ("distilbert", ["input_ids", "attention_mask"])])
def test_export_has_dynamic_axes_and_matches_torch(family, names, tmp_path):
    model = tiny_model(family)
    path = export_onnx(model, tmp_path / "model.onnx", seq_len=12)
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == names
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch, length in ((1, 5), (3, 40)):  # neither the traced batch (2) nor length (12)
        inputs = _inputs(batch, length)
        report = compare_with_torch(model, path, inputs)
        assert report["predictions_agree"] and report["max_abs_logit_difference"] < 1e-4
        with torch.inference_mode():
            expected = model(**inputs).logits.numpy()
        np.testing.assert_allclose(onnx_logits(session, inputs), expected, atol=1e-4)
        assert onnx_predictions(path, inputs).tolist() == expected.argmax(-1).tolist()


def test_check_onnx_with_a_tokenizer_and_a_wrong_model_is_caught(tmp_path):
    model = tiny_model("bert")
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    path = export_onnx(model, tmp_path / "model.onnx", seq_len=8)
    assert check_onnx(model, tokenizer, path)["examples"] == 4
    other = tiny_model("bert", seed=1)  # different weights: the check must notice
    with pytest.raises(ExportError, match="differ from PyTorch"):
        check_onnx(other, tokenizer, path)


@pytest.mark.parametrize("embeddings", [False, True])
def test_an_int8_model_exports_to_onnx_runtime_int8_kernels(embeddings, tmp_path):
    from autocompress.plugins.quantization import quantize_int8_dynamic

    model = tiny_model("bert", ffn=512)
    int8 = quantize_int8_dynamic(model, "bert.embeddings.word_embeddings" if embeddings else None)
    float_path = export_onnx(model, tmp_path / "float.onnx", seq_len=8)
    path = export_onnx(int8, tmp_path / "int8.onnx", seq_len=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.onnx", "int8.onnx"]  # no float twin left
    graph = onnx.load(str(path))
    ops = Counter(node.op_type for node in graph.graph.node)
    linears = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.modules())
    assert ops["MatMulInteger"] == linears and ops["DynamicQuantizeLinear"] >= 1
    eight_bit = {i.name for i in graph.graph.initializer if i.data_type in (onnx.TensorProto.INT8,
                                                                            onnx.TensorProto.UINT8)}
    assert ("bert.embeddings.word_embeddings.weight_quantized" in eight_bit) == embeddings
    assert path.stat().st_size < 0.5 * float_path.stat().st_size
    report = compare_with_torch(int8, path, _inputs(3, 10))
    assert report["int8"] and report["predictions_agree"]


def test_bf16_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ExportError, match="bfloat16"):
        export_onnx(tiny_model("bert").to(torch.bfloat16), tmp_path / "b.onnx", seq_len=8)


def test_check_of_an_int8_graph_still_catches_a_wrong_model(tmp_path):
    from autocompress.plugins.quantization import quantize_int8_dynamic

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    path = export_onnx(quantize_int8_dynamic(tiny_model("bert")), tmp_path / "model.onnx", seq_len=8)
    assert check_onnx(quantize_int8_dynamic(tiny_model("bert")), tokenizer, path)["int8"]
    with pytest.raises(ExportError, match="int8 kernels"):
        check_onnx(quantize_int8_dynamic(tiny_model("bert", seed=1)), tokenizer, path)


def test_the_target_scores_accuracy_with_onnx_runtime(tmp_path):
    from autocompress.plugins.cpu_target import CpuTarget
    from autocompress.plugins.quantization import quantize_int8_dynamic

    model = quantize_int8_dynamic(tiny_model("bert"))
    assert CpuTarget().runtime(model) is model
    target = OnnxRuntimeTarget()
    scored = target.runtime(model)
    inputs = _inputs(4, 12)
    logits = scored(**inputs).logits
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 2)
    np.testing.assert_array_equal(logits.numpy(), onnx_logits(target.exported(model, 8), inputs))
    target.measure(model, SETTINGS)
    assert target._count == 1  # measuring the same model uses the graph made for scoring


def test_target_measures_and_exports_an_unchanged_model_once():
    host = build_host(autoload=False)
    assert host.targets["onnxruntime"] is OnnxRuntimeTarget
    assert OnnxRuntimeTarget.unavailable_reason() is None
    target = OnnxRuntimeTarget()
    teacher = tiny_model("bert", ffn=512)
    first = target.measure(teacher, SETTINGS)
    again = target.measure(teacher, SETTINGS)
    assert target._count == 1  # the teacher is measured beside every candidate; exported once
    assert first.latency_ms > 0 and first.latency_p90_ms >= first.latency_ms
    assert first.parameters == again.parameters == parameter_count(teacher)
    assert first.memory_mb >= first.model_mb > parameter_count(teacher) * 4 / 2**20 * 0.95

    from autocompress.arch import adapter_for
    from autocompress.plugins.ffn_pruning import FfnPruning
    from autocompress.technique import ApplyContext

    pruned = copy.deepcopy(teacher)
    context = ApplyContext(adapter=adapter_for(pruned, host.architectures), tokenizer=None)
    pruned = FfnPruning().apply(pruned, FfnPruning.make_config({"keep_fraction": 0.25}), context)
    smaller = target.measure(pruned, SETTINGS)
    assert target._count == 2 and smaller.model_mb < first.model_mb


def test_an_exported_file_lives_as_long_as_its_model_and_is_replaced_when_it_changes():
    target = OnnxRuntimeTarget()
    model = tiny_model("bert")
    first = target.exported(model, 8)
    with torch.no_grad():
        model.classifier.weight.mul_(2)  # changed in place: exported again, the old file removed
    second = target.exported(model, 8)
    assert second != first and second.exists() and not first.exists()
    del model
    gc.collect()
    assert not second.exists()  # a search does not pile up one file per candidate


def test_missing_onnxruntime_is_named_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, find_spec says missing
    reason = OnnxRuntimeTarget.unavailable_reason()
    assert reason is not None and "onnxruntime" in reason and 'pip install "autocompress[onnx]"' in reason
    with pytest.raises(ExportError, match="needs onnxruntime"):
        onnx_session(tmp_path / "model.onnx")

    from autocompress.config import settings_from_options
    from autocompress.search import run_search

    settings = settings_from_options({"model": tmp_path / "none", "data": tmp_path / "none.csv",
                                      "target": "onnxruntime", "out": tmp_path / "run"})
    # Refused before the task is even validated (no model or data exists here).
    with pytest.raises(InputError, match=r"target 'onnxruntime' cannot be used here: it needs onnxruntime"):
        run_search(settings, build_host(autoload=False))


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 200, seed=5, text_column="sentence", label_column="polarity", filename="reviews.csv")
    return root


def test_search_on_the_onnxruntime_target_runs_int8_trials_in_onnx_runtime(tiny_task, tmp_path):
    from autocompress.cli import main

    out = tmp_path / "run"
    # Three fixed plans (the built-in starting points depend on what the probe times on this machine: on the
    # CI machine it once found no post step worth its cost on this tiny model, and no trial was int8 alone):
    # int8 alone, a structure step alone, and a structure step with the dtype left to the sampler.
    plans = tmp_path / "plans.yaml"
    plans.write_text("- quantization: {dtype: int8}\n- ffn_pruning: {keep_fraction: 0.5}\n"
                     "- ffn_pruning: {keep_fraction: 0.7}\n  quantization: {embeddings: false}\n")
    code = main(["search", "--model", str(tiny_task / "model"), "--data", str(tiny_task / "reviews.csv"),
                 "--text-column", "sentence", "--label-column", "polarity", "--trials", "3", "--out", str(out),
                 "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.3", "--seed", "2",
                 "--sampler", "random", "--target", "onnxruntime", "--techniques", "quantization,ffn_pruning",
                 "--starting-points", str(plans)])
    assert code in (0, 5)
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3
    quantized = trials[trials["param.use.quantization"]]
    int8 = quantized[quantized["param.quantization.dtype"] == "int8"]
    others = trials[~trials["param.use.quantization"]]
    # ONNX Runtime has no bf16 kernels: the probe found it refused, so no trial is spent on it.
    assert set(quantized["param.quantization.dtype"]) <= {"int8", "int8-static"}
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{out / 'study.db'}")
    refused = {row["label"]: row["refused"] for row in study.user_attrs["probe"]["rows"]}
    assert "bfloat16" in refused["bf16 only"] and refused["int8 dynamic only"] is None
    # ... and the space every trial drew its dtype from had no bf16 left in it.
    spaces = [trial.distributions["quantization.dtype"] for trial in study.trials
              if "quantization.dtype" in trial.distributions]
    assert spaces and all(set(space.choices) == {"int8", "int8-static"} for space in spaces)
    assert (quantized["state"] == "COMPLETE").all() and (quantized["latency_ms"] > 0).all()
    assert len(int8) >= 1
    assert len(others) >= 1 and (others["state"] == "COMPLETE").all()
    assert (others["latency_ms"] > 0).all()
    # int8 graphs hold int8 weights (dynamic or static): smaller than the teacher's float graph. The
    # tiny model's embeddings stay float and are most of its bytes, and static int8 may keep layers in
    # float: the largest int8 graph measured 0.80x the teacher's (0.478 of 0.597 MB) once the float
    # graph's transposes were folded and its constants stored once.
    teacher_mb = json.loads((out / "pareto.json").read_text())["baseline"]["model_mb"]
    int8_mb = quantized.loc[~quantized["param.use.ffn_pruning"], "model_mb"]
    assert len(int8_mb) and int8_mb.max() < 0.85 * teacher_mb


def test_every_structure_technique_at_once_exports_and_agrees_with_torch(tmp_path):
    """One plan with every built-in structure technique (one export, for time): each step's modules
    (sliced, factorised, shared, narrowed) export, and ONNX Runtime computes what PyTorch does."""
    from autocompress.candidate import apply_steps
    from autocompress.structure import structure_of
    from autocompress.technique import Plan, PlanStep, Stage
    from autocompress.testing import TechniqueContract

    techniques = build_host(autoload=False).techniques
    values = {"layer_sharing": {"group_size": 2, "representative": "first"}, "width_pruning": {"width_fraction": 0.5},
              "head_pruning": {"fraction": 0.25, "scoring": "l1"}, "low_rank": {"rank_ratio": 0.25, "layers": "both"},
              "layer_drop": {"keep_layers": 4}, "ffn_pruning": {"keep_fraction": 0.5}, "vocab_trim": {}}
    plan = Plan.build([PlanStep(techniques[name], techniques[name].make_config(v)) for name, v in values.items()])
    model = tiny_model("bert", layers=6)
    model = apply_steps(model, plan.at(Stage.STRUCTURE), TechniqueContract().context(model, tmp_path))
    assert [step.technique for step in structure_of(model).steps] == sorted(values)  # each one changed the model
    path = export_onnx(model, tmp_path / "model.onnx", seq_len=8)
    vocab = model.get_input_embeddings().num_embeddings
    assert compare_with_torch(model, path, _inputs(2, 10, vocab=vocab))["predictions_agree"]


def test_shared_layers_are_stored_once_in_the_graph_and_run_int8_kernels(tmp_path):
    from autocompress.plugins.quantization import quantize_int8_dynamic

    sizes, kernels = [], []
    for shared in (False, True):
        model = tiny_model("bert", layers=4, hidden=128, ffn=512)  # weights big enough not to be folded per use
        if shared:
            model.bert.encoder.layer[1] = model.bert.encoder.layer[0]
        model = quantize_int8_dynamic(model)
        path = export_onnx(model, tmp_path / f"{shared}.onnx", seq_len=8)
        sizes.append(path.stat().st_size)
        ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
        kernels.append(ops["MatMulInteger"])
        assert compare_with_torch(model, path, _inputs(2, 10))["predictions_agree"]
    one_layer = 4 * 128 * 128 + 2 * 128 * 512  # int8: one byte per weight
    assert sizes[0] - sizes[1] > 0.8 * one_layer  # one layer's weights fewer
    assert kernels[0] == kernels[1]  # every product of a shared layer is int8 too
