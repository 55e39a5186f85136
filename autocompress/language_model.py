"""Causal language modelling: documents encoded for next-token prediction, its loss, its distillation
loss and its quality (the mean log-likelihood per predicted token).

A document is tokenised whole (the tokenizer's special tokens included) and cut into consecutive
windows of ``max_length`` tokens; a window of one token predicts nothing and is dropped. A
batch's labels are its token ids with padding set to ``IGNORE``: position ``t`` predicts the
token at ``t + 1``, and a padded position is never predicted nor predicts.

The quality figure is ``sum log p(token) / number of predicted tokens`` over the whole split
(token-weighted, padding excluded): higher is better, as every ``QualityMetric``; people read it
as perplexity, ``exp(-value)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autocompress.corpus import Documents
from autocompress.training import Encoded, logits_of

#: The label of a position that is not predicted (padding): ``cross_entropy``'s ``ignore_index``.
IGNORE = -100


@dataclass(frozen=True)
class TokenEncoded(Encoded):
    """Encoded documents: each batch's labels are its own token ids, ``IGNORE`` on padding
    (``labels`` holds one placeholder per window, only so the rows can be counted and indexed)."""

    def subset(self, indices: list[int]) -> TokenEncoded:
        return TokenEncoded([self.input_ids[i] for i in indices], self.labels[indices], self.pad_id)

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return next_token_loss(logits, labels, reduction)

    def batches(self, batch_size: int, order: list[int] | None = None):
        for inputs, _ in super().batches(batch_size, order):
            yield inputs, inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, IGNORE)


def encode_documents(tokenizer, documents: Documents, max_length: int) -> TokenEncoded:
    """``documents`` tokenised and cut into windows of at most ``max_length`` tokens (windows of one
    token dropped)."""
    windows = []
    for ids in tokenizer(list(documents.texts))["input_ids"]:
        windows += [ids[start:start + max_length] for start in range(0, len(ids), max_length)
                    if len(ids) - start > 1]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TokenEncoded(windows, torch.zeros(len(windows), dtype=torch.long), pad)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of each position's prediction of the next token (``labels``: token ids, ``IGNORE``
    where nothing is to be predicted); ``mean`` over predicted tokens, or their ``sum``."""
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                       ignore_index=IGNORE, reduction=reduction)


def token_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                            temperature: float, alpha: float) -> torch.Tensor:
    """Per predicted token ``(1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))`` over the vocabulary
    ``+ alpha * cross-entropy of the next token``, averaged over the predicted tokens (padding never counts)."""
    predicted = labels[:, 1:] != IGNORE
    log_student = torch.log_softmax(student_logits[:, :-1].float() / temperature, dim=-1)
    log_teacher = torch.log_softmax(teacher_logits[:, :-1].float() / temperature, dim=-1)
    kl = nn.functional.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(-1)
    soft = temperature**2 * kl[predicted].mean()
    if alpha == 0:
        return soft
    return (1.0 - alpha) * soft + alpha * next_token_loss(student_logits, labels)


@dataclass(frozen=True)
class TokenScores:
    """Sums over a split's predicted tokens."""

    log_likelihood: float
    correct: int
    tokens: int

    @property
    def mean_log_likelihood(self) -> float:
        return self.log_likelihood / self.tokens if self.tokens else float("nan")

    @property
    def accuracy(self) -> float:
        """Next-token accuracy: the share of predicted tokens that are the model's top choice."""
        return self.correct / self.tokens if self.tokens else float("nan")


def token_scores(model: nn.Module, data: Encoded, batch_size: int = 16) -> TokenScores:
    """``model``'s log-likelihood and top-1 hits summed over every predicted token of ``data``."""
    model.eval()
    total, correct, tokens = 0.0, 0, 0
    with torch.inference_mode():
        for inputs, labels in data.batches(batch_size):
            logits = logits_of(model, inputs)
            total -= float(next_token_loss(logits, labels, reduction="sum"))
            targets = labels[:, 1:]
            predicted = targets != IGNORE
            correct += int((logits[:, :-1].argmax(-1) == targets)[predicted].sum())
            tokens += int(predicted.sum())
    return TokenScores(total, correct, tokens)
