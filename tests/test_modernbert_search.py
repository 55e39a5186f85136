"""A user's ModernBERT classifier (tiny, written from a config) through a whole search: every technique that
supports the family, on PyTorch and on ONNX Runtime, and the best model reloaded in a fresh process."""

import json

import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.testing import fresh_process_outputs, synthetic_sentiment, write_tiny_checkpoint

PLANS = """\
- layer_drop: {keep_layers: 2, strategy: every_other}
  ffn_pruning: {keep_fraction: 0.5}
  head_pruning: {fraction: 0.5, scoring: gradient}
  distillation: {epochs: 0.5}
  quantization: {dtype: int8}
- vocab_trim: {min_count: 1}
  low_rank: {rank_ratio: 0.5, layers: both}
  lora: {rank: 4, epochs: 0.5, targets: both}
  quantization: {dtype: bf16}
- layer_drop: {keep_layers: 1, strategy: importance}
  head_pruning: {fraction: 0.25, scoring: l1}
"""

RELOAD = (
    "import sys, json, torch, autocompress\n"
    "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
    "batch = tok(['the film was good', 'a dull boring plot'], return_tensors='pt', padding=True)\n"
    "with torch.no_grad():\n"
    "    print(json.dumps(model(**batch).logits.tolist()))\n"
)


@pytest.fixture(scope="module")
def modernbert_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("modernbert")
    write_tiny_checkpoint(root / "model", family="modernbert")
    texts, labels = synthetic_sentiment(200, seed=6)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "reviews.csv", index=False)
    return root


def _search(task, out, *extra):
    return main(["search", "--model", str(task / "model"), "--data", str(task / "reviews.csv"), "--out", str(out),
                 "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.5",
                 "--free-floor", "none", *extra])


@pytest.mark.slow
def test_a_modernbert_search_with_every_technique_reloads_its_best_model_in_a_fresh_process(modernbert_task, tmp_path):
    plans = tmp_path / "plans.yaml"
    plans.write_text(PLANS)
    out = tmp_path / "run"
    techniques = "layer_drop,ffn_pruning,head_pruning,vocab_trim,low_rank,distillation,lora,quantization"
    assert _search(modernbert_task, out, "--trials", "3", "--techniques", techniques,
                   "--starting-points", str(plans)) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"] * 3, trials[["plan", "reason"]].to_string()
    teacher = json.loads((out / "run.json").read_text())["baseline"]["parameters"]
    assert (trials["parameters"] < teacher).all()
    best = json.loads((out / "pareto.json").read_text())["recommended"]
    assert best is not None
    fresh = fresh_process_outputs(RELOAD, out / "best")
    assert fresh[0] == fresh[1] and len(json.loads(fresh[0])) == 2


def test_a_modernbert_search_on_onnx_runtime_runs_its_int8_trial_there(modernbert_task, tmp_path):
    pytest.importorskip("onnxruntime")
    plans = tmp_path / "plans.yaml"
    plans.write_text("- layer_drop: {keep_layers: 2}\n  quantization: {dtype: int8}\n")
    out = tmp_path / "run"
    assert _search(modernbert_task, out, "--trials", "1", "--target", "onnxruntime", "--techniques",
                   "layer_drop,quantization", "--starting-points", str(plans)) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"], trials[["plan", "reason"]].to_string()
