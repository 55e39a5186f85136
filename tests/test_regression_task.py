"""Regression (a score per text: similarity, rating): a one-output model, scores as labels, Pearson or
Spearman as the task's metric, squared-error training and distillation."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from autocompress import distill
from autocompress.cli import main
from autocompress.data import TextDataset, load_task_data, random_split, score_values
from autocompress.errors import DataError, InputError
from autocompress.int8_sensitivity import _divergence
from autocompress.measure import thread_count
from autocompress.metrics import Pearson, Spearman, pearson, ranks, regression_metric
from autocompress.plugins.local_task import LocalTask
from autocompress.task import TaskOptions, load_task
from autocompress.testing import fresh_process_outputs, synthetic_sentiment, tiny_model, tiny_tokenizer
from autocompress.training import encode, fine_tune, task_loss


def _scored(n: int, seed: int) -> pd.DataFrame:
    """A score per sentence: 1 for positive, 0 for negative, plus 0.1 per word (so it is no class)."""
    texts, labels = synthetic_sentiment(n, seed=seed)
    scores = [(1.0 if label == "pos" else 0.0) + 0.1 * len(text.split()) for text, label in zip(texts, labels,
                                                                                                 strict=True)]
    return pd.DataFrame({"text": texts, "score": scores})


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    """A tiny BERT with one output, fine-tuned on ``_scored`` sentences, saved as a checkpoint."""
    directory = tmp_path_factory.mktemp("regressor")
    frame = _scored(400, seed=1)
    with thread_count(1):
        model = tiny_model("bert", num_labels=1)
        model.config.problem_type = "regression"
        tokenizer = tiny_tokenizer(directory)
        data = encode(tokenizer, TextDataset(list(frame.text), [float(s) for s in frame.score]), 32)
        fine_tune(model, data, epochs=4.0, learning_rate=3e-3, batch_size=32)
    model.save_pretrained(directory)
    return directory


def test_scores_are_read_as_numbers_and_a_label_that_is_none_is_named():
    assert score_values(["3.5", 1, "0"], "x.csv") == [3.5, 1.0, 0.0]
    with pytest.raises(DataError, match=r"x.csv: a regression model needs a number as every label; 2 are not "
                                        r"\('good', 'nan'\)"):
        score_values(["1", "good", "nan"], "x.csv")
    with pytest.raises(DataError, match="every label is 2.0"):
        score_values(["2", "2.0"], "x.csv")


def test_a_random_split_is_seeded_and_keeps_the_scores():
    texts = [f"t{i}" for i in range(50)]
    data = random_split(texts, [i / 10 for i in range(50)], "score", seed=3)
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 5, 5)
    assert data.regression and data.num_labels == 1 and data.label_names == ["score"]
    together = {t: y for split in (data.train, data.validation, data.test) for t, y in zip(split.texts, split.labels,
                                                                                            strict=True)}
    assert together == {f"t{i}": i / 10 for i in range(50)}
    assert random_split(texts, [i / 10 for i in range(50)], "score", seed=3) == data
    assert random_split(texts, [i / 10 for i in range(50)], "score", seed=4) != data


def test_scores_train_with_squared_error_and_classes_with_cross_entropy():
    logits = torch.tensor([[0.5], [2.0]])
    assert task_loss(logits, torch.tensor([1.0, 1.0])) == pytest.approx((0.25 + 1.0) / 2)
    classes = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert task_loss(classes, torch.tensor([0, 1])) == pytest.approx(float(torch.log1p(torch.exp(torch.tensor(-2.0)))))
    encoded = encode(tiny_tokenizer(), TextDataset(["good film"], [0.7]), 16)
    assert encoded.labels.dtype == torch.float32


def test_pearson_and_spearman_match_their_definitions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30).tolist(), rng.normal(size=30).tolist()
    assert pearson(x, y) == pytest.approx(float(np.corrcoef(x, y)[0, 1]))
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    # Spearman is Pearson on ranks: any increasing transform scores 1.
    assert pearson(ranks(x), ranks([v**3 for v in x])) == pytest.approx(1.0)
    assert pearson([1.0, 1.0], [0.0, 2.0]) == 0.0


def test_regression_distillation_matches_the_teacher_score_and_the_label():
    student, teacher = torch.tensor([[1.0], [0.0], [2.0]]), torch.tensor([[0.0], [0.0], [1.0]])
    labels = torch.tensor([3.0, float("nan"), 2.0])
    # Labelled rows: 0.5 * (s - t)^2 + 0.5 * (s - y)^2; the unlabeled row: (s - t)^2 alone.
    expected = ((0.5 * 1 + 0.5 * 4) + 0.0 + (0.5 * 1 + 0.5 * 0)) / 3
    assert float(distill.logit_distillation_loss(student, teacher, labels, 2.0, 0.5)) == pytest.approx(expected)
    assert float(_divergence(torch.tensor([[1.0]]), torch.tensor([[3.0]]))[0]) == pytest.approx(4.0)


def test_a_classification_metric_for_a_regression_model_is_refused(regressor, tmp_path):
    _scored(60, seed=2).to_csv(tmp_path / "scores.csv", index=False)
    options = dict(model=regressor, data=tmp_path / "scores.csv", label_column="score")
    with pytest.raises(InputError, match="--metric 'f1' measures classification, and this is a regression task"):
        LocalTask(TaskOptions(**options, metric="f1")).validate()
    assert LocalTask(TaskOptions(**options)).quality_metric() == Pearson()
    assert regression_metric("Spearman") == Spearman()
    frame = _scored(60, seed=2).astype({"score": object})
    frame.loc[4, "score"] = "high"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv: a regression model needs a number as every label; 1 are not "
                                        r"\('high'\)"):
        LocalTask(TaskOptions(**{**options, "data": tmp_path / "bad.csv"})).validate()
    # A regression metric with a classifier of classes is refused; with a base model (here the demo's), the
    # labels must be scores, for the regression teacher it is fine-tuned into.
    frame = pd.DataFrame({"text": ["good"] * 5 + ["bad"] * 5, "label": ["pos"] * 5 + ["neg"] * 5})
    frame.to_csv(tmp_path / "classes.csv", index=False)
    from autocompress.testing import write_tiny_checkpoint

    classifier = write_tiny_checkpoint(tmp_path / "classifier")
    with pytest.raises(InputError, match="--metric pearson measures regression, which needs a regression checkpoint "
                                         r"as --model .* or a base model .* is a classifier of 2 classes"):
        LocalTask(TaskOptions(model=classifier, data=tmp_path / "classes.csv", metric="pearson")).validate()
    with pytest.raises(DataError, match="classes.csv: a regression model needs a number as every label"):
        LocalTask(TaskOptions(data=tmp_path / "classes.csv", metric="pearson")).validate()
    assert load_task_data(tmp_path / "scores.csv", label_column="score", regression=True).regression


@pytest.mark.slow
def test_a_regression_search_optimises_pearson_and_its_best_model_reloads_in_a_fresh_process(regressor, tmp_path):
    _scored(240, seed=5).to_csv(tmp_path / "scores.csv", index=False)
    plans = tmp_path / "plans.yaml"
    plans.write_text("- quantization: {dtype: int8}\n- layer_drop: {keep_layers: 1}\n  head_pruning: {fraction: 0.5}\n"
                     "  distillation: {epochs: 1.5, learning_rate: 2.0e-4}\n")
    out = tmp_path / "run"
    code = main(["search", "--model", str(regressor), "--data", str(tmp_path / "scores.csv"), "--label-column",
                 "score", "--out", str(out), "--trials", "2", "--techniques",
                 "layer_drop,head_pruning,distillation,quantization", "--repeats", "3", "--warmup", "1",
                 "--no-progress", "--max-accuracy-drop", "0.3", "--starting-points", str(plans)])
    assert code in (0, 5)
    run = json.loads((out / "run.json").read_text())
    assert run["quality_metric"] == "pearson"
    task = load_task(LocalTask(TaskOptions(model=regressor, data=tmp_path / "scores.csv", label_column="score")))
    baseline = run["baseline"]
    assert baseline["val_accuracy"] == pytest.approx(Pearson().score(task.teacher, encode(
        task.tokenizer, task.data.validation, 64)), abs=1e-6)
    assert baseline["test_accuracy"] > 0.8  # the teacher learnt the scores
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["state"] == "COMPLETE").all(), trials[["plan", "reason"]].to_string()
    assert (trials["test_accuracy"] > 0.5).all(), trials[["plan", "test_accuracy"]].to_string()
    best = json.loads((out / "pareto.json").read_text())["recommended"]
    if best is None:
        pytest.fail(f"no trial met a drop of 0.3 in Pearson: {trials[['plan', 'val_accuracy']].to_string()}")
    script = ("import sys, json, torch, autocompress\n"
              "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
              "batch = tok(['the film was good', 'a dull plot'], return_tensors='pt', padding=True)\n"
              "with torch.no_grad():\n"
              "    print(json.dumps([round(v, 5) for v in model(**batch).logits[:, 0].tolist()]))\n")
    fresh = fresh_process_outputs(script, out / "best")
    assert fresh[0] == fresh[1] and len(json.loads(fresh[0])) == 2
