"""The task's quality metric (``autocompress.metrics``): what the search optimises, limits and reports."""

import json

import pandas as pd
import pytest
import torch

from autocompress.cli import main
from autocompress.errors import InputError
from autocompress.measure import thread_count
from autocompress.metrics import F1, Accuracy, classification_metric, f1_score
from autocompress.plugins.local_task import LocalTask
from autocompress.task import TaskOptions, load_task
from autocompress.testing import synthetic_sentiment, tiny_tokenizer, trained_tiny_model, write_tiny_checkpoint
from autocompress.training import Encoded, encode


def test_binary_f1_is_the_second_labels_f1():
    # class 1: tp 2, fp 1, fn 1 -> 2*2 / (4 + 1 + 1)
    assert f1_score([1, 1, 1, 0, 0], [1, 1, 0, 1, 0], 2) == pytest.approx(4 / 6)
    assert f1_score([0, 0, 0], [1, 1, 0], 2) == 0.0  # never predicts the positive class
    assert f1_score([1, 0], [1, 0], 2) == 1.0


def test_multiclass_f1_is_the_macro_average():
    predicted, truth = [0, 1, 2, 2, 1], [0, 1, 2, 1, 1]
    # class 0: 1.0; class 1: tp 2, fn 1 -> 0.8; class 2: tp 1, fp 1 -> 2/3
    assert f1_score(predicted, truth, 3) == pytest.approx((1.0 + 0.8 + 2 / 3) / 3)


def test_the_f1_metric_scores_what_the_model_predicts():
    with thread_count(1):
        model = trained_tiny_model()
        texts, labels = synthetic_sentiment(80, seed=9)
        from autocompress.data import TextDataset

        data = encode(tiny_tokenizer(), TextDataset(texts, [1 if y == "pos" else 0 for y in labels]), 32)
        logits = torch.cat([model(**inputs).logits for inputs, _ in data.batches(64)])
    predicted = logits.argmax(-1).tolist()
    assert F1().score(model, data) == pytest.approx(f1_score(predicted, data.labels.tolist(), 2))
    flipped = Encoded(data.input_ids, 1 - data.labels, data.pad_id)  # the same model, the labels swapped
    assert F1().score(model, flipped) < 0.2 < F1().score(model, data)


def test_an_unknown_metric_is_refused_naming_the_option_and_the_valid_ones():
    assert classification_metric(None) == Accuracy() and classification_metric("F1") == F1()
    with pytest.raises(InputError, match=r"--metric 'f2': unknown metric \(valid: accuracy \(.*\), f1 \("):
        classification_metric("f2")


@pytest.mark.slow
def test_a_search_on_f1_optimises_and_reports_f1(tmp_path):
    model = write_tiny_checkpoint(tmp_path / "model", train_steps=40)
    texts, labels = synthetic_sentiment(400, seed=4)
    # Imbalanced (about 1 positive in 5), with every 5th label flipped so the teacher errs: F1 and
    # accuracy part ways.
    flip = {"pos": "neg", "neg": "pos"}
    rows = [(t, flip[y] if i % 5 == 1 else y) for i, (t, y) in enumerate(zip(texts, labels, strict=True))
            if y == "neg" or i % 8 == 0]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "run"
    common = ["search", "--model", str(model), "--data", str(tmp_path / "data.csv"), "--techniques", "quantization",
              "--starting-points", "none", "--out", str(out), "--no-progress", "--repeats", "2", "--warmup", "1",
              "--max-accuracy-drop", "0.5"]
    assert main([*common, "--trials", "1", "--metric", "f1"]) in (0, 5)
    run = json.loads((out / "run.json").read_text())
    assert run["quality_metric"] == "f1"
    # The teacher's baseline is its F1 on validation, not its accuracy.
    task = load_task(LocalTask(TaskOptions(model=model, data=tmp_path / "data.csv", metric="f1")))
    validation = encode(task.tokenizer, task.data.validation, 64)
    baseline = json.loads((out / "pareto.json").read_text())["baseline"]
    assert baseline["val_accuracy"] == pytest.approx(F1().score(task.teacher, validation))
    assert baseline["val_accuracy"] != pytest.approx(Accuracy().score(task.teacher, validation))
    assert "| test f1 |" in (out / "report.md").read_text()
    # The same model and data on accuracy is another study: the run directory refuses to mix them.
    assert main([*common, "--trials", "2"]) == 2
