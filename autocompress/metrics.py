"""How good a model is at its task: the quality measure a task owns (plugin API 1.6).

The search optimises a task's metric on the validation split, limits its drop against the
teacher (``--max-accuracy-drop``, in the metric's own units: 0.01 = 1 point) and reports it on the
test split. Which metric is the task's decision (``TaskProvider.quality_metric``); a
classification task takes ``--metric``:

- ``accuracy`` (the default): the share of examples whose predicted class is the label;
- ``f1``: with two classes, the F1 score of the second label in sorted order (``pos`` of
  neg/pos, ``1`` of 0/1: the class a duplicate-question or paraphrase task calls positive, as
  GLUE scores MRPC and QQP); with more, the macro average over the classes.

Every metric here is higher-is-better, and the limit bounds ``teacher - candidate``. The run
record's columns keep their names (``val_accuracy``, ``test_accuracy``) whatever the metric;
run.json's ``quality_metric`` says which it is, and the summary, report and model card name it.

Importing this module loads no torch (``autocompress.config`` checks ``--metric`` early).
"""

from __future__ import annotations

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


#: The metrics ``--metric`` names, for classification tasks.
CLASSIFICATION_METRICS: dict[str, type[QualityMetric]] = {cls.name: cls for cls in (Accuracy, F1)}


def classification_metric(name: str | None) -> QualityMetric:
    """The classification metric ``name`` (None: accuracy); an InputError naming ``--metric`` otherwise."""
    if name is None:
        return Accuracy()
    cls = CLASSIFICATION_METRICS.get(str(name).strip().lower())
    if cls is None:
        valid = ", ".join(f"{key} ({value.description})" for key, value in CLASSIFICATION_METRICS.items())
        raise InputError(f"--metric {name!r}: unknown metric (valid: {valid})")
    return cls()
