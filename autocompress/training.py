"""Tokenising, fine-tuning and evaluating sequence classifiers (shared by tasks and techniques)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from autocompress.data import TextDataset
from autocompress.token_data import TaggedDataset, encode_tagged

#: The label of a position no loss or metric counts: a word's later sub-tokens, special tokens and
#: padding in token classification (cross-entropy's ``ignore_index``).
IGNORED = -100


@dataclass(frozen=True)
class Encoded:
    """A tokenised dataset: unpadded id lists (padded per batch) and labels; for sentence pairs, the
    segment of each token too (``token_type_ids``, when the tokenizer gives them: BERT's does).

    Labels are one per example (a class, or a score). Other kinds of task data are subclasses that
    own their labels' meaning, how a batch's labels are cut and their loss (``task_loss``):
    ``TaggedEncoded`` (a tag per token), ``VectorEncoded`` (an embedding per text) and
    ``language_model.TokenEncoded`` (next-token prediction). Code that needs the supervised loss asks
    the data (``Encoded.task_loss``), never the tensors' shapes."""

    input_ids: list[list[int]]
    labels: torch.Tensor
    pad_id: int
    token_type_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices: list[int]) -> Encoded:
        """The examples at ``indices``, in that order (segments included)."""
        types = None if self.token_type_ids is None else [self.token_type_ids[i] for i in indices]
        return type(self)([self.input_ids[i] for i in indices], self.labels[indices], self.pad_id, types)

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The supervised loss of one of this data's batches (``labels`` as ``batches`` gives them): the
        module's ``task_loss`` here; encoded documents (``language_model.TokenEncoded``) have next-token
        loss instead. The data's type says which loss, not the tensors' shapes: a token classifier's and a
        language model's batches have the same ones."""
        return task_loss(logits, labels, reduction)

    def batches(self, batch_size: int, order: list[int] | None = None) -> Iterator[tuple[dict, torch.Tensor]]:
        order = order if order is not None else list(range(len(self)))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            rows = [self.input_ids[i] for i in index]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = 1
            inputs = {"input_ids": ids, "attention_mask": mask}
            if self.token_type_ids is not None:
                types = torch.zeros((len(rows), width), dtype=torch.long)
                for i, position in enumerate(index):
                    row = self.token_type_ids[position]
                    types[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                inputs["token_type_ids"] = types
            yield inputs, self.labels[index]


@dataclass(frozen=True)
class TaggedEncoded(Encoded):
    """Encoded tagged words (token classification): ``labels`` is examples x longest row, each word's
    tag on its first sub-token and ``IGNORED`` everywhere else; a batch's labels are cut to its width,
    and its loss is per token (``tagged_loss``)."""

    def batches(self, batch_size: int, order: list[int] | None = None) -> Iterator[tuple[dict, torch.Tensor]]:
        for inputs, labels in super().batches(batch_size, order):
            yield inputs, labels[:, : inputs["input_ids"].shape[1]]

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return tagged_loss(logits, labels, reduction)


@dataclass(frozen=True)
class VectorEncoded(Encoded):
    """Encoded texts whose labels are vectors, one per text (the teacher's embeddings of them: an
    embedding task; NaN rows for texts the teacher embeds during training); the loss compares
    embeddings (``autocompress.embedding.embedding_loss``)."""

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        from autocompress.embedding import embedding_loss

        return embedding_loss(logits, labels, reduction=reduction)


def encode(tokenizer, dataset: TextDataset, max_length: int) -> Encoded:
    """``dataset`` tokenised, truncated to ``max_length`` tokens (a pair: the longer text first; tagged
    words, ``autocompress.token_data.TaggedDataset``: with a label per token); a language model's
    documents (``autocompress.corpus.Documents``) encoded for next-token prediction instead
    (``autocompress.language_model.encode_documents``)."""
    from autocompress.corpus import Documents

    if isinstance(dataset, TaggedDataset):
        return encode_tagged(tokenizer, dataset, max_length)
    if isinstance(dataset, Documents):
        from autocompress.language_model import encode_documents

        return encode_documents(tokenizer, dataset, max_length)
    if dataset.pairs is None:
        encoded = tokenizer(list(dataset.texts), truncation=True, max_length=max_length)
        types = None
    else:
        encoded = tokenizer(list(dataset.texts), list(dataset.pairs), truncation=True, max_length=max_length)
        types = encoded.get("token_type_ids")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Scores (a regression task) and embeddings (an embedding task) stay floats; class indices become a LongTensor.
    if dataset.vectors:
        return VectorEncoded(encoded["input_ids"], torch.tensor(dataset.labels, dtype=torch.float32), pad, types)
    dtype = torch.float32 if dataset.scores else torch.long
    return Encoded(encoded["input_ids"], torch.tensor(dataset.labels, dtype=dtype), pad, types)


def sample_batches(tokenizer, dataset: TextDataset, count: int, seed: int, max_length: int,
                   batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Model inputs of ``count`` examples of ``dataset`` (all when fewer) drawn with ``seed``, in batches:
    what techniques that score parts of the model run it on (second texts of a pair task included)."""
    chosen = random.Random(seed).sample(range(len(dataset)), min(count, len(dataset)))
    return [inputs for inputs, _ in encode(tokenizer, dataset.subset(chosen), max_length).batches(batch_size)]


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The supervised loss of a batch of texts with one label each: cross-entropy over classes for
    class labels, squared error of the one output for scores (float labels: a regression task). Other
    task kinds' batches have their own (``Encoded.task_loss``: ``TaggedEncoded``, ``VectorEncoded``,
    ``language_model.TokenEncoded``); a technique that needs the loss asks the data for it."""
    if labels.is_floating_point():
        return nn.functional.mse_loss(logits[:, 0].float(), labels, reduction=reduction)
    return nn.functional.cross_entropy(logits, labels, reduction=reduction)


def tagged_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Token classification: cross-entropy over the tokens whose label is not ``IGNORED`` (``reduction``
    "none" gives one loss per token, flattened)."""
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORED,
                                       reduction=reduction)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def logits_of(model: nn.Module, inputs: dict) -> torch.Tensor:
    out = model(**inputs)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits.float()


def predict_with_classes(model: nn.Module, data: Encoded, batch_size: int = 64) -> tuple[torch.Tensor, int]:
    """Predicted class of every example, in order, and how many classes the model scores."""
    model.eval()
    predictions, classes = [], 0
    with torch.inference_mode():
        for inputs, _ in data.batches(batch_size):
            logits = logits_of(model, inputs)
            classes = logits.shape[-1]
            predictions.append(logits.argmax(dim=-1))
    return torch.cat(predictions), classes


def predict(model: nn.Module, data: Encoded, batch_size: int = 64) -> torch.Tensor:
    """Predicted class of every example, in order."""
    return predict_with_classes(model, data, batch_size)[0]


def accuracy(model: nn.Module, data: Encoded, batch_size: int = 64) -> float:
    return float((predict(model, data, batch_size) == data.labels).float().mean())


def fine_tune(
    model: nn.Module,
    train: Encoded,
    *,
    epochs: float = 2.0,
    learning_rate: float = 5e-5,
    batch_size: int = 32,
    seed: int = 0,
    loss_fn: Callable[[dict, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    progress: str | None = None,
    parameters: list[nn.Parameter] | None = None,
) -> nn.Module:
    """Train ``model`` with AdamW and linear decay after 6% warm-up.

    ``loss_fn(inputs, labels, student_logits)`` replaces ``task_loss`` (distillation uses it).
    ``on_step(step, total_steps)`` is called after every optimiser step (intermediate evaluation,
    pruning). A non-finite loss raises ``FloatingPointError`` instead of training on garbage.
    """
    seed_everything(seed)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = max(1, round(epochs * steps_per_epoch))
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, int(0.06 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    generator = random.Random(seed)
    model.train()
    bar = tqdm(total=total, desc=progress, unit="step", leave=False, disable=progress is None)
    step = 0
    while step < total:
        order = list(range(len(train)))
        generator.shuffle(order)
        for inputs, labels in train.batches(batch_size, order):
            logits = logits_of(model, inputs)
            if loss_fn is None:
                loss = train.task_loss(logits, labels)
            else:
                loss = loss_fn(inputs, labels, logits)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at step {step}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if on_step is not None:
                model.eval()
                on_step(step, total)
                model.train()
            if step >= total:
                break
    bar.close()
    model.eval()
    return model
