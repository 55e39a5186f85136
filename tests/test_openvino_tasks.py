"""Every model family and every task kind runs under OpenVINO (the openvino target converts candidates
straight from PyTorch) with PyTorch's outputs: classifier logits, per-token tags, a regression score,
sentence pairs with their segment ids, sentence embeddings; and a search on the openvino target scores
a task whose outputs are not class logits (embeddings) on what OpenVINO runs."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from autocompress.cli import main
from autocompress.embedding import load_sentence_encoder, read_sentence_model
from autocompress.measure import thread_count
from autocompress.testing import FAMILIES, synthetic_sentiment, tiny_model, varied_inputs, write_tiny_sentence_model
from autocompress.testing.tiny_ner import TAGS, tiny_token_classifier

pytest.importorskip("openvino")


def _openvino_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """What the openvino target's module returns for ``inputs`` (float: f32 inference precision)."""
    from autocompress.plugins.openvino_target import OpenVinoTarget

    with torch.inference_mode():
        return OpenVinoTarget().runtime(model)(**inputs).logits.numpy()


def _pytorch_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return model(**inputs).logits.float().numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_runs_under_openvino_with_pytorchs_logits(family):
    model = tiny_model(family)
    inputs = varied_inputs(128)  # rows of different lengths, padded: masks and (decoders) last-token pooling
    expected = _pytorch_outputs(model, inputs)
    assert np.abs(_openvino_outputs(model, inputs) - expected).max() < 1e-4


def _pair_inputs() -> dict[str, torch.Tensor]:
    """Padded rows whose second half of real tokens is segment 1 (the second text of a pair)."""
    inputs = varied_inputs(128)
    types = torch.zeros_like(inputs["input_ids"])
    for row, length in enumerate(inputs["attention_mask"].sum(dim=1).tolist()):
        types[row, length // 2 : length] = 1
    return dict(inputs, token_type_ids=types)


@pytest.mark.parametrize("kind", ["tokens", "regression", "pairs"])
def test_each_task_kind_runs_under_openvino_with_pytorchs_outputs(kind):
    if kind == "tokens":
        model, inputs = tiny_token_classifier("bert", vocab_size=128), varied_inputs(128)
    elif kind == "regression":
        model, inputs = tiny_model("bert", num_labels=1), varied_inputs(128)
    else:
        model, inputs = tiny_model("bert"), _pair_inputs()
        with torch.no_grad():  # segment 1's embedding as far from segment 0's as a trained pair model's
            model.bert.embeddings.token_type_embeddings.weight[1].normal_(generator=torch.Generator().manual_seed(0))
    expected = _pytorch_outputs(model, inputs)
    found = _openvino_outputs(model, inputs)
    assert found.shape == expected.shape == {"tokens": (8, 24, len(TAGS)), "regression": (8, 1), "pairs": (8, 2)}[kind]
    assert np.abs(found - expected).max() < 1e-4
    if kind == "pairs":  # the segment ids reach OpenVINO: without them, the outputs differ
        single = _pytorch_outputs(model, dict(inputs, token_type_ids=torch.zeros_like(inputs["token_type_ids"])))
        assert np.abs(single - expected).max() > 1e-3


def test_a_sentence_encoder_runs_under_openvino_with_the_same_embeddings(tmp_path):
    model, tokenizer = load_sentence_encoder(read_sentence_model(write_tiny_sentence_model(tmp_path / "model")))
    inputs = dict(tokenizer(["the film was good", "a dull plot, and far too long for what it had to say"],
                            return_tensors="pt", padding=True))
    expected = _pytorch_outputs(model, inputs)
    found = _openvino_outputs(model, inputs)
    assert found.shape == expected.shape == (2, 64)
    assert np.abs(found - expected).max() < 1e-5


def test_an_embedding_search_on_the_openvino_target_scores_what_openvino_runs(tmp_path):
    write_tiny_sentence_model(tmp_path / "model")
    texts, _ = synthetic_sentiment(200, seed=2)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    plans = tmp_path / "plans.yaml"
    plans.write_text("- quantization: {dtype: int8-static, fallback_layers: 0}\n")
    out = tmp_path / "run"
    with thread_count(1):
        assert main(["search", "--task", "embedding", "--model", str(tmp_path / "model"), "--data",
                     str(tmp_path / "texts.txt"), "--out", str(out), "--trials", "1", "--techniques", "quantization",
                     "--target", "openvino", "--repeats", "3", "--warmup", "1", "--no-progress",
                     "--max-accuracy-drop", "0.5", "--free-floor", "none", "--starting-points", str(plans)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["target"] == "openvino" and run["quality_metric"] == "recall@10"
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"], trials.to_string()
    # NNCF's int8 weights: smaller, and the neighbours of the embeddings OpenVINO returns kept.
    assert trials["test_accuracy"].iloc[0] > 0.9 and trials["memory_mb"].iloc[0] < 0.6 * run["baseline"]["memory_mb"]
