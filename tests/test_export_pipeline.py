"""Exports that fit the Hugging Face tools: ``transformers.pipeline`` runs every export (plain transformers
for a plain candidate, the trust_remote_code loader for per-layer shapes and int8), the model card carries
Hub metadata, and ``--push-to-hub --dry-run`` says what it would upload without uploading."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from api_plugins import LastLayerFfnPruning

import autocompress
from autocompress.cli import main
from autocompress.export import SHIM_MODULE, TASK_TYPES, read_front_matter
from autocompress.plugin_manager import build_host
from autocompress.testing import write_tiny_task

TEXTS = ["the film was good", "a dull boring plot", "superb warm story", "cold grim ending"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two 1-trial runs on a tiny task: uniform FFN pruning (plain) and last-layer FFN pruning + int8."""
    root = tmp_path_factory.mktemp("export")
    write_tiny_task(root, 160, seed=6)
    (root / "plain.yaml").write_text("- ffn_pruning: {keep_fraction: 0.5}\n")
    (root / "custom.yaml").write_text("- last_layer_ffn_pruning: {keep_fraction: 0.5}\n  quantization: {dtype: int8}\n")
    common = ["--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.5", "--trials", "1"]
    assert main(["search", "--model", str(root / "model"), "--data", str(root / "data.csv"), "--techniques",
                 "ffn_pruning", "--starting-points", str(root / "plain.yaml"), "--out", str(root / "plain"),
                 *common]) == 0
    custom = autocompress.compress(root / "model", root / "data.csv", techniques=[LastLayerFfnPruning, "quantization"],
                                   starting_points=root / "custom.yaml", out=root / "custom", trials=1, repeats=3,
                                   warmup=1, max_accuracy_drop=0.5)
    return root, custom


PIPELINE = """
import json, sys, torch, autocompress
from transformers import pipeline
texts = json.loads(sys.argv[2])
kwargs = {"trust_remote_code": True} if sys.argv[3] == "trust" else {}
classify = pipeline("text-classification", model=sys.argv[1], **kwargs)
model, tokenizer = autocompress.load_pretrained(sys.argv[1])
with torch.inference_mode():
    logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
layers = classify.model.bert.encoder.layer
print(json.dumps({
    "pipeline": [r["label"] for r in classify(texts)],
    "load_pretrained": [model.config.id2label[int(i)] for i in logits.argmax(-1)],
    "ffn": [type(layer.intermediate.dense).__module__ for layer in layers],
    "widths": [layer.output.dense.in_features for layer in layers],
}))
"""


def _pipeline(directory, tmp_path, trust: bool) -> subprocess.CompletedProcess:
    """``pipeline(...)`` in a fresh process, its Hugging Face home (dynamic-module cache) in ``tmp_path``."""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", PIPELINE, str(directory), json.dumps(TEXTS),
                           "trust" if trust else "plain"], capture_output=True, text=True, env=env)


def test_pipeline_runs_a_plain_export_with_plain_transformers(runs, tmp_path, capsys):
    root, _ = runs
    out = tmp_path / "shipped"
    assert main(["export", str(root / "plain"), "--to", str(out)]) == 0
    assert "transformers.pipeline loads it as it is" in capsys.readouterr().out
    assert not (out / f"{SHIM_MODULE}.py").exists() and "auto_map" not in json.loads((out / "config.json").read_text())
    result = _pipeline(out, tmp_path, trust=False)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["pipeline"] == seen["load_pretrained"] and set(seen["pipeline"]) <= {"neg", "pos"}
    assert seen["ffn"] == ["torch.nn.modules.linear"] * 2 and seen["widths"] == [64, 64]


def test_pipeline_runs_a_per_layer_int8_export_through_its_trust_remote_code_loader(runs, tmp_path):
    _, custom = runs
    out = custom.recommended.export(tmp_path / "shipped")
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == {"AutoModelForSequenceClassification": f"{SHIM_MODULE}.AutocompressModel"}
    result = _pipeline(out, tmp_path, trust=True)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["pipeline"] == seen["load_pretrained"]
    # The model the pipeline runs is the one measured: int8 kernels, the last layer's FFN half as wide.
    assert all("quantized.dynamic" in module for module in seen["ffn"]) and seen["widths"] == [128, 64]
    # Plain transformers cannot rebuild it: refused, not silently wrong.
    plain = _pipeline(out, tmp_path, trust=False)
    assert plain.returncode != 0 and "size mismatch" in plain.stderr.lower()
    card = (out / "README.md").read_text()
    assert 'trust_remote_code=True' in card and "pip install autocompress" in card


def test_the_model_card_carries_hub_metadata_with_the_measured_numbers(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "shipped"
    assert main(["export", str(root / "plain"), "--to", str(out), "--license", "mit"]) == 0
    front = read_front_matter(out / "README.md")
    row = pd.read_csv(root / "plain" / "trials.csv").set_index("number").loc[0]
    assert front["license"] == "mit" and front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "text-classification"
    assert front["tags"] == ["autocompress", "compressed", "ffn_pruning"]
    assert "base_model" not in front  # a local folder is no Hub id
    (result,) = front["model-index"][0]["results"]
    assert front["model-index"][0]["name"] == "shipped"
    assert result["task"]["type"] == "text-classification" and result["dataset"]["split"] == "test"
    metrics = {m["type"]: m for m in result["metrics"]}
    assert metrics["accuracy"]["value"] == round(row["test_accuracy"], 4)
    assert metrics["latency_ms"]["value"] == round(row["latency_ms"], 3)
    assert metrics["memory_mb"]["value"] == round(row["memory_mb"], 2)
    assert "batch 1, sequence length 64, 2 threads" in metrics["latency_ms"]["name"]


def test_push_to_hub_dry_run_shows_what_would_be_uploaded_and_uploads_nothing(runs, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run contacted the Hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    root, _ = runs
    out = tmp_path / "shipped"
    assert main(["export", str(root / "plain"), "--to", str(out), "--push-to-hub", "me/tiny-sentiment-small",
                 "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "dry run: would upload" in printed and "'me/tiny-sentiment-small'" in printed
    for path in out.iterdir():
        assert f"{path.name}" in printed and f"{path.stat().st_size:,} bytes" in printed
    assert "name: me/tiny-sentiment-small" in printed and "pipeline_tag: text-classification" in printed
    assert "nothing was uploaded (--dry-run)" in printed

    assert main(["export", str(root / "plain"), "--to", str(tmp_path / "b"), "--dry-run"]) == 2
    assert "--dry-run goes with --push-to-hub" in capsys.readouterr().err
    assert main(["export", str(root / "plain"), "--to", str(tmp_path / "c"), "--push-to-hub", "no-owner"]) == 2
    assert "not a Hub repository id of the form owner/name" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_every_registered_task_type_exports_to_a_pipeline_tested_here():
    """A task provider's pipeline_tag needs an export entry; a new entry needs its pipeline test in this file."""
    tags = {entry.cls.pipeline_tag for entry in build_host(autoload=False).tasks}
    assert tags <= set(TASK_TYPES)
    # token-classification's pipeline test: tests/test_token_classification.py (it needs a NER search);
    # text-generation: tests/test_lm_task.py exports a language model and loads it with AutoModelForCausalLM;
    # feature-extraction (sentence embeddings): test_embedding_task.py::test_an_export_loads_with_sentence_transformers
    assert set(TASK_TYPES) == {"text-classification", "token-classification", "text-generation",
                               "feature-extraction"}, "add a pipeline test for the new task type"
