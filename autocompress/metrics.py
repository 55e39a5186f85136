"""How good a model is at its task: the quality measure a task owns (plugin API 1.6).

The search optimises a task's metric on the validation split, limits its drop against the
teacher (``--max-accuracy-drop``, in the metric's own units: 0.01 = 1 point) and reports it on the
test split. Which metric is the task's decision (``TaskProvider.quality_metric``); a
classification task takes ``--metric``:

- ``accuracy`` (the default): the share of examples whose predicted class is the label;
- ``f1``: with two classes, the F1 score of the second label in sorted order (``pos`` of
  neg/pos, ``1`` of 0/1: the class a duplicate-question or paraphrase task calls positive, as
  GLUE scores MRPC and QQP); with more, the macro average over the classes.

A regression task (a model with one output; labels are scores) takes ``pearson`` (the default)
or ``spearman``: the correlation of the predicted and labelled scores. A language model
(``--task lm``) is scored by ``log_likelihood``, the mean log-likelihood per predicted token,
which people read as perplexity (``QualityMetric.display``).

Every metric here is higher-is-better, and the limit bounds ``teacher - candidate``. The run
record's columns keep their names (``val_accuracy``, ``test_accuracy``) whatever the metric;
run.json's ``quality_metric`` says which it is, and the summary, report and model card name it.

Importing this module loads no torch (``autocompress.config`` checks ``--metric`` early).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from autocompress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from autocompress.training import Encoded


class QualityMetric(ABC):
    """A task's measure of quality: higher is better; ``score`` runs the model over encoded examples."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def score(self, model: nn.Module, data: Encoded, batch_size: int = 64) -> float:
        """The metric of ``model``'s predictions on ``data`` (its labels are the truth)."""

    def shown_as(self) -> str:
        """What a person reads ``display``'s figure as (the summary, report and model card name it)."""
        return self.name

    def display(self, value: float) -> str:
        """``value`` (as stored: higher is better) as a person reads it; the value itself by default."""
        return f"{value:.4f}"

    def also_recorded(self) -> tuple[QualityMetric, ...]:
        """Other metrics of the task scored beside this one on each complete trial's test split and
        recorded with it (``TrialRecorder.also_scored``), not optimised; cheap ones only. None by default."""
        return ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Accuracy(QualityMetric):
    name = "accuracy"
    description = "share of examples whose predicted class is the label"

    def score(self, model, data, batch_size: int = 64) -> float:
        from autocompress.training import accuracy

        return accuracy(model, data, batch_size)


class F1(QualityMetric):
    name = "f1"
    description = "two classes: F1 of the second label in sorted order; more: macro-averaged F1"

    def score(self, model, data, batch_size: int = 64) -> float:
        from autocompress.training import predict_with_classes

        predicted, classes = predict_with_classes(model, data, batch_size)
        return f1_score(predicted.tolist(), data.labels.tolist(), classes)


def f1_score(predicted: list[int], truth: list[int], classes: int) -> float:
    """Binary (``classes`` == 2): F1 of class 1; otherwise the mean F1 over the classes that occur
    in ``truth`` or ``predicted``. A class never predicted and never true scores nothing; F1 of a
    class with no true positive is 0."""
    def class_f1(c: int) -> float:
        tp = sum(p == c and t == c for p, t in zip(predicted, truth, strict=True))
        fp = sum(p == c and t != c for p, t in zip(predicted, truth, strict=True))
        fn = sum(p != c and t == c for p, t in zip(predicted, truth, strict=True))
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)

    if classes == 2:
        return class_f1(1)
    present = sorted(set(predicted) | set(truth))
    return sum(class_f1(c) for c in present) / len(present) if present else 0.0


def _scores(model, data, batch_size: int) -> tuple[list[float], list[float]]:
    """A one-output (regression) model's score of every example, and the labels."""
    import torch

    from autocompress.training import logits_of

    model.eval()
    predicted = []
    with torch.inference_mode():
        for inputs, _ in data.batches(batch_size):
            predicted += logits_of(model, inputs)[:, 0].tolist()
    return predicted, data.labels.float().tolist()


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson's correlation coefficient; 0 when either side is constant (no linear relation to find)."""
    n = len(x)
    mean_x, mean_y = sum(x) / n, sum(y) / n
    cov = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    var_x = sum((a - mean_x) ** 2 for a in x)
    var_y = sum((b - mean_y) ** 2 for b in y)
    return 0.0 if var_x == 0 or var_y == 0 else cov / (var_x * var_y) ** 0.5


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank (as Spearman's coefficient needs)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            result[i] = (start + end) / 2 + 1
        start = end + 1
    return result


class Pearson(QualityMetric):
    name = "pearson"
    description = "regression: Pearson correlation of the predicted and labelled scores"

    def score(self, model, data, batch_size: int = 64) -> float:
        return pearson(*_scores(model, data, batch_size))


class Spearman(QualityMetric):
    name = "spearman"
    description = "regression: Spearman rank correlation of the predicted and labelled scores"

    def score(self, model, data, batch_size: int = 64) -> float:
        predicted, truth = _scores(model, data, batch_size)
        return pearson(ranks(predicted), ranks(truth))


class LogLikelihood(QualityMetric):
    """A language model's quality: the mean log-likelihood per predicted token of held-out text
    (token-weighted over the split, padding excluded; ``autocompress.language_model``). Stored as
    that (higher is better, so the limit and the record work unchanged) and shown as perplexity,
    ``exp(-value)``; ``--max-perplexity-increase r`` is a drop limit of ``log(1 + r)``."""

    name = "log_likelihood"
    description = "language model: mean log-likelihood per predicted token of held-out text, shown as perplexity"

    def score(self, model, data, batch_size: int = 16) -> float:
        from autocompress.language_model import token_scores

        return token_scores(model, data, batch_size).mean_log_likelihood

    def shown_as(self) -> str:
        return "perplexity"

    def display(self, value: float) -> str:
        return f"{perplexity(value):.3f}"


def perplexity(mean_log_likelihood: float) -> float:
    """``exp(-mean log-likelihood per token)``; infinite when that overflows."""
    try:
        return math.exp(-mean_log_likelihood)
    except OverflowError:
        return math.inf


#: The metrics ``--metric`` names, for classification tasks (the first is the default).
CLASSIFICATION_METRICS: dict[str, type[QualityMetric]] = {cls.name: cls for cls in (Accuracy, F1)}
#: ... and for regression tasks (a model with one output and scores as labels).
REGRESSION_METRICS: dict[str, type[QualityMetric]] = {cls.name: cls for cls in (Pearson, Spearman)}


def metric_named(name: str | None) -> QualityMetric:
    """The metric a run recorded by ``name`` (run.json ``quality_metric``): what displays its
    figures. Accuracy for runs that recorded none; an unknown name shows its values as they are."""
    known = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS, LogLikelihood.name: LogLikelihood}
    if name is None or name in known:
        return known.get(name or Accuracy.name)()
    return _Unknown(name)


class _Unknown(QualityMetric):
    """A metric this installation does not know (a plugin's), shown by name with its values as they are."""

    description = "a metric this installation does not know"

    def __init__(self, name: str):
        self.name = name

    def score(self, model, data, batch_size: int = 64) -> float:
        raise NotImplementedError(f"metric {self.name!r} is not known here")


def _named(name: str | None, metrics: dict[str, type[QualityMetric]], kind: str,
           others: dict[str, type[QualityMetric]], other_kind: str) -> QualityMetric:
    if name is None:
        return next(iter(metrics.values()))()
    key = str(name).strip().lower()
    if key in metrics:
        return metrics[key]()
    valid = ", ".join(f"{k} ({v.description})" for k, v in metrics.items())
    if key in others:
        raise InputError(f"--metric {name!r} measures {other_kind}, and this is a {kind} task (valid: {valid})")
    raise InputError(f"--metric {name!r}: unknown metric (valid: {valid})")


def classification_metric(name: str | None) -> QualityMetric:
    """The classification metric ``name`` (None: accuracy); an InputError naming ``--metric`` otherwise."""
    return _named(name, CLASSIFICATION_METRICS, "classification", REGRESSION_METRICS, "regression")


def regression_metric(name: str | None) -> QualityMetric:
    """The regression metric ``name`` (None: pearson); an InputError naming ``--metric`` otherwise."""
    return _named(name, REGRESSION_METRICS, "regression", CLASSIFICATION_METRICS, "classification")
