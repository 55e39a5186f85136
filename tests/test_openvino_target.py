"""The openvino target: every built-in structure converts, precision as asked, a clear missing-extra error."""

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from autocompress.arch import FactorizedEmbedding, adapter_for
from autocompress.candidate import apply_steps
from autocompress.errors import ExportError, InputError
from autocompress.openvino_runtime import compile_model, convert, cpu_has_bf16
from autocompress.plugin_manager import build_host
from autocompress.plugins.openvino_target import OpenVinoTarget
from autocompress.technique import ApplyContext, PlanStep
from autocompress.testing import synthetic_sentiment, tiny_model, tiny_tokenizer
from autocompress.testing.target_contract import SETTINGS

HOST = build_host(autoload=False)
STRUCTURES = {  # every built-in structure technique, strongly
    "vocab_trim": {"min_count": 3},
    "layer_drop": {"keep_layers": 1},
    "head_pruning": {"fraction": 0.5, "scoring": "l1"},
    "ffn_pruning": {"keep_fraction": 0.25},
    "low_rank": {"rank_ratio": 0.25, "layers": "both"},
}


def _inputs(model, batch=3, length=9):
    generator = torch.Generator().manual_seed(3)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _agrees(model):
    scored = OpenVinoTarget().runtime(model)
    inputs = _inputs(model)
    with torch.inference_mode():
        expected = model(**inputs).logits
    assert torch.allclose(scored(**inputs).logits, expected, atol=1e-4), (scored(**inputs).logits, expected)


@pytest.mark.parametrize("technique", list(STRUCTURES))
def test_every_built_in_structure_converts_and_agrees_with_pytorch(technique, tmp_path):
    from autocompress.data import stratified_split

    model = tiny_model("bert")
    texts, labels = synthetic_sentiment(60)
    context = ApplyContext(adapter=adapter_for(model, HOST.architectures), tokenizer=tiny_tokenizer(tmp_path),
                           data=stratified_split(texts, [int(y == "pos") for y in labels], ["neg", "pos"]),
                           teacher=copy.deepcopy(model), max_length=32)
    cls = HOST.techniques[technique]
    compressed = apply_steps(model, [PlanStep(cls, cls.make_config(STRUCTURES[technique]))], context).eval()
    _agrees(compressed)


def test_a_factorised_embedding_and_distilbert_convert():
    model = tiny_model("bert")
    model.bert.embeddings.word_embeddings = FactorizedEmbedding(nn.Embedding(128, 16, padding_idx=0),
                                                                nn.Linear(16, 64, bias=False))
    _agrees(model.eval())
    _agrees(tiny_model("distilbert"))


def test_precision_is_asked_for_explicitly():
    model = tiny_model("bert")
    converted = convert(model)
    assert converted.precision == "f32"  # the CPU plugin would default to bf16 where the CPU has it
    assert compile_model(converted, threads=1).get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    if cpu_has_bf16():
        converted = convert(bf16)
        assert converted.precision == "bf16" and converted.weight_bytes < 0.6 * convert(model).weight_bytes
        hint = compile_model(converted, threads=1).get_property("INFERENCE_PRECISION_HINT")
        assert hint.get_type_name() == "bf16"
    else:
        with pytest.raises(ExportError, match="no native bf16"):
            convert(bf16)


def test_an_unchanged_model_is_converted_once():
    target = OpenVinoTarget()
    model = tiny_model("bert")
    first = target.converted(model)
    target.measure(model, SETTINGS)
    assert target.converted(model) is first  # the teacher is measured beside every candidate
    with torch.no_grad():
        model.classifier.weight.mul_(2)
    assert target.converted(model) is not first


def test_missing_openvino_is_named_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import fails, find_spec says missing
    reason = OpenVinoTarget.unavailable_reason()
    assert reason is not None and "nncf" in reason and 'pip install "autocompress[openvino]"' in reason
    with pytest.raises(ExportError, match="needs nncf"):
        convert(tiny_model("bert"))

    from autocompress.config import settings_from_options
    from autocompress.search import run_search

    settings = settings_from_options({"model": tmp_path / "none", "data": tmp_path / "none.csv",
                                      "target": "openvino", "out": tmp_path / "run"})
    # Refused before the task is even validated (no model or data exists here).
    with pytest.raises(InputError, match=r"target 'openvino' cannot be used here: it needs nncf"):
        run_search(settings, build_host(autoload=False))


def test_converting_sends_no_telemetry_and_writes_nothing_in_home(tmp_path):
    """OpenVINO's converter writes a client id and usage stats into ~/intel (and sends them) unless told
    otherwise; our conversion does not. The plain call in a second process shows the check can fail."""
    ours = textwrap.dedent("""
        from autocompress.openvino_runtime import convert, _nncf
        from autocompress.testing import tiny_model
        convert(tiny_model("bert")); _nncf()
    """)
    plain = textwrap.dedent("""
        import openvino as ov
        from autocompress.onnx_export import example_inputs
        from autocompress.testing import tiny_model
        model = tiny_model("bert")
        ov.convert_model(model, example_input=dict(example_inputs(model, 2, 8)))
    """)
    for name, code in (("ours", ours), ("plain", plain)):
        home = tmp_path / name
        home.mkdir()
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD": "1"}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=300)
    assert not any((tmp_path / "ours").iterdir())
    assert (tmp_path / "plain" / "intel").is_dir()
