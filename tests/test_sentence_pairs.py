"""Sentence-pair classification (NLI, duplicate questions, reranking): ``--text-pair-column`` names the second
text, and every example reaches the model as the pair (text, second text) with its segment ids."""

import json
import random

import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.data import TextDataset, load_task_data
from autocompress.errors import DataError
from autocompress.testing import fresh_process_outputs, synthetic_sentiment, tiny_tokenizer, write_tiny_checkpoint
from autocompress.testing.tiny import NEUTRAL
from autocompress.training import encode


def _pairs(n: int, seed: int) -> pd.DataFrame:
    """A first text of neutral words only, and a second text that carries the sentiment: the label can only
    be read from the pair, never from the first text alone."""
    rng = random.Random(seed)
    seconds, labels = synthetic_sentiment(n, seed=seed)
    firsts = [" ".join(rng.choice(NEUTRAL) for _ in range(rng.randint(3, 6))) for _ in range(n)]
    return pd.DataFrame({"premise": firsts, "hypothesis": seconds, "label": labels})


def test_the_second_texts_travel_with_their_examples_through_the_split(tmp_path):
    frame = _pairs(60, seed=1)
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    data = load_task_data(tmp_path / "pairs.csv", "premise", pair_column="hypothesis")
    expected = {(a, b): label for a, b, label in zip(frame.premise, frame.hypothesis, frame.label, strict=True)}
    seen = 0
    for split in (data.train, data.validation, data.test):
        assert split.pairs is not None and len(split.pairs) == len(split.texts)
        for text, pair, label in zip(split.texts, split.pairs, split.labels, strict=True):
            assert data.label_names[label] == expected[text, pair]
            seen += 1
    assert seen == 60
    single = load_task_data(tmp_path / "pairs.csv", "premise")
    assert single.train.pairs is None and single.fingerprint() != data.fingerprint()
    assert data.train.head(3).pairs == data.train.pairs[:3]


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns=["hypothesis"]), "column 'hypothesis' not found"),
    (lambda f: f.assign(hypothesis=[""] + list(f.hypothesis[1:])), "an empty text, second text or label (row 2)"),
])
def test_bad_pair_data_is_refused_naming_the_column_or_rows(tmp_path, change, message):
    change(_pairs(30, seed=2)).to_csv(tmp_path / "pairs.csv", index=False)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_task_data(tmp_path / "pairs.csv", "premise", pair_column="hypothesis")


def test_a_pair_column_that_is_the_text_column_is_refused(tmp_path):
    _pairs(30, seed=2).to_csv(tmp_path / "pairs.csv", index=False)
    with pytest.raises(DataError, match="--text-pair-column 'premise' is also the text column"):
        load_task_data(tmp_path / "pairs.csv", "premise", pair_column="premise")


def test_pairs_are_encoded_with_their_segments():
    tokenizer = tiny_tokenizer()
    pair = TextDataset(["the film"], [0], ["good plot"])
    encoded = encode(tokenizer, pair, 32)
    (inputs, _), = list(encoded.batches(8))
    ids, types = inputs["input_ids"][0].tolist(), inputs["token_type_ids"][0].tolist()
    sep = tokenizer.sep_token_id
    assert ids.count(sep) == 2 and types == [0] * (ids.index(sep) + 1) + [1] * (len(ids) - ids.index(sep) - 1)
    single = list(encode(tokenizer, TextDataset(["the film good plot"], [0]), 32).batches(8))[0][0]
    assert "token_type_ids" not in single  # single texts are encoded as before


def test_a_pair_search_reads_both_texts_and_its_best_model_reloads_in_a_fresh_process(tmp_path):
    write_tiny_checkpoint(tmp_path / "model")
    _pairs(240, seed=3).to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "run"
    plans = tmp_path / "plans.yaml"  # fixed plans: the built-in ones depend on what the probe times here
    plans.write_text("- quantization: {dtype: int8}\n- layer_drop: {keep_layers: 1}\n  vocab_trim: {min_count: 1}\n"
                     "  distillation: {epochs: 1.0}\n")
    assert main(["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "pairs.csv"),
                 "--text-column", "premise", "--text-pair-column", "hypothesis", "--out", str(out), "--trials", "2",
                 "--techniques", "layer_drop,vocab_trim,distillation,quantization", "--repeats", "3", "--warmup", "1",
                 "--no-progress", "--max-accuracy-drop", "0.2", "--free-floor", "none", "--seed", "1",
                 "--starting-points", str(plans)]) == 0
    run = json.loads((out / "run.json").read_text())
    # The sentiment is only in the second text: a teacher that saw the first texts alone would be at chance.
    assert run["baseline"]["test_accuracy"] >= 0.9, run["baseline"]
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["state"] == "COMPLETE").all(), trials[["plan", "reason"]].to_string()
    assert trials["test_accuracy"].max() >= 0.9
    script = ("import sys, json, torch, autocompress\n"
              "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
              "batch = tok(['the film', 'a plot'], ['was good', 'dull and boring'], return_tensors='pt',\n"
              "            padding=True)\n"
              "with torch.no_grad():\n"
              "    print(json.dumps(model(**batch).logits.argmax(-1).tolist()))\n")
    fresh = fresh_process_outputs(script, out / "best")
    assert fresh[0] == fresh[1]
