"""Entity-level F1 of a token classifier (NER), with seqeval's default (non-strict) chunk matching.

Tags follow the BIO scheme (IOB2): ``B-TYPE`` begins an entity, ``I-TYPE`` continues it, ``O`` is
outside any entity. As seqeval does by default, an ``I-TYPE`` that does not continue an entity of the
same type (after ``O``, after another type, or first in a sentence) begins a new entity too.
An entity counts as found only when a predicted chunk has exactly its span and its type; the score
is micro-averaged over every entity of every sentence: ``F1 = 2PR / (P + R)`` with precision ``P``
over predicted chunks and recall ``R`` over true ones (0 when nothing matches).

Scored on words: a model predicts a tag for every sub-token, and a word's tag is its first
sub-token's (the positions whose label is not ``autocompress.training.IGNORED``; words cut off by
``--max-length`` are not scored). Importing this module loads no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from autocompress.metrics import QualityMetric

if TYPE_CHECKING:
    from torch import nn

    from autocompress.training import Encoded

OUTSIDE = "O"
#: Prefixes of the BIO scheme (the only one supported): begin and inside.
BIO_PREFIXES = ("B", "I")


def is_bio_tag(tag: str) -> bool:
    """``O``, or ``B-TYPE`` / ``I-TYPE`` with a non-empty type."""
    if tag == OUTSIDE:
        return True
    prefix, dash, kind = tag.partition("-")
    return prefix in BIO_PREFIXES and dash == "-" and bool(kind)


def _split(tag: str) -> tuple[str, str]:
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of one sentence's BIO tags as ``(type, first word, last word)``, in order.

    A chunk begins at ``B-X``, or at ``I-X`` unless the word before is part of an ``X`` chunk; it
    ends before the next ``O``, ``B-`` or change of type. Raises ValueError for a tag that is not BIO.
    """
    found: list[tuple[str, int, int]] = []
    start, current = -1, ""
    for position, tag in enumerate(tags):
        if not is_bio_tag(tag):
            raise ValueError(f"tag {tag!r} is not a BIO tag (O, B-TYPE or I-TYPE)")
        prefix, kind = _split(tag)
        continues = prefix == "I" and start >= 0 and kind == current
        if start >= 0 and not continues:
            found.append((current, start, position - 1))
            start = -1
        if prefix != OUTSIDE and not continues:
            start, current = position, kind
    if start >= 0:
        found.append((current, start, len(tags) - 1))
    return found


def entity_f1(predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    """Micro-averaged entity F1 of ``predicted`` against ``truth`` (lists of sentences' tags, aligned)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted sentences but {len(truth)} true ones")
    guessed: set[tuple[int, str, int, int]] = set()
    actual: set[tuple[int, str, int, int]] = set()
    for sentence, (tags, gold) in enumerate(zip(predicted, truth, strict=True)):
        if len(tags) != len(gold):
            raise ValueError(f"sentence {sentence}: {len(tags)} predicted tags but {len(gold)} true ones")
        guessed |= {(sentence, *chunk) for chunk in chunks(tags)}
        actual |= {(sentence, *chunk) for chunk in chunks(gold)}
    hits = len(guessed & actual)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(guessed), hits / len(actual)
    return 2 * precision * recall / (precision + recall)


def word_tags(model: nn.Module, data: Encoded, tag_names: Sequence[str],
              batch_size: int = 64) -> tuple[list[list[str]], list[list[str]]]:
    """Predicted and true tags of every word of ``data`` (a token-classification ``Encoded``): each
    word's first sub-token's argmax, and its label."""
    import torch

    from autocompress.training import IGNORED, logits_of

    model.eval()
    predicted, truth = [], []
    with torch.inference_mode():
        for inputs, labels in data.batches(batch_size):
            guesses = logits_of(model, inputs).argmax(dim=-1)
            for row_guesses, row_labels in zip(guesses, labels, strict=True):
                words = row_labels != IGNORED
                predicted.append([tag_names[i] for i in row_guesses[words].tolist()])
                truth.append([tag_names[i] for i in row_labels[words].tolist()])
    return predicted, truth


class EntityF1(QualityMetric):
    """Token classification's metric: entity-level micro F1 over the words (see the module's docstring)."""

    name = "entity_f1"
    description = "token classification: entity-level micro F1 (exact span and type, seqeval-style BIO chunks)"

    def __init__(self, tag_names: Sequence[str]):
        self.tag_names = list(tag_names)

    def score(self, model, data, batch_size: int = 64) -> float:
        return entity_f1(*word_tags(model, data, self.tag_names, batch_size))


def token_metric(name: str | None, tag_names: Sequence[str]) -> EntityF1:
    """Token classification's metric for ``--metric`` ``name`` (None or ``entity_f1``); an InputError otherwise."""
    from autocompress.errors import InputError

    if name is None or str(name).strip().lower() == EntityF1.name:
        return EntityF1(tag_names)
    raise InputError(f"--metric {name!r}: a token-classification task is scored by {EntityF1.name} "
                     f"({EntityF1.description})")
