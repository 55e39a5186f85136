"""Knowledge-distillation losses and the recovery training loop shared by the recovery techniques.

Loss of one batch (``s``/``t``: student/teacher logits, ``T``: temperature)::

    (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)) + alpha * CE(s, y)
    + attention_weight * sum over mapped layers of the attention-map loss (KL or MSE)
    + hidden_weight * sum over mapped layers of MSE(project(h_s), h_t)

Student layer ``i`` of ``n_s`` is matched with teacher layer ``floor((i+1) * n_t / n_s + 1/2) - 1``
(uniform, half rounded up so the last layers always meet), unless a structure step recorded which
teacher layer each student layer came from (``context.layer_origin``). When widths differ a
learned linear projection per layer maps student states to the teacher's width; it is trained
with the student and thrown away afterwards. When heads differ (head pruning) the attention maps
are averaged over heads before they are compared. Padding positions never count.

The teacher's logits on the training split are computed once and kept in ``TEACHER_LOGITS``,
keyed by ``(id(teacher), data.fingerprint(), max_length)``; inside an entry each example is found
by its teacher-side token ids, so a student whose token ids differ from the teacher's (its ids
translated through ``context.token_map``) still hits the cache; a token classifier's logits (one
row per token) are kept for the example's real tokens and padded to each batch's width. A language
model's are not kept (sequence x vocabulary per example): they are computed per batch, and its loss
is per predicted token (``autocompress.language_model``). Hidden states and
attention maps are too big to keep for a whole training split: they are computed per batch under
``torch.no_grad`` and only when their loss is on.

**Beyond the labelled examples** (``RecoverySettings.unlabeled`` / ``augment_to``): the task's
unlabeled texts (``TaskData.unlabeled``, from ``--unlabeled``) and word-replaced copies of the
labelled texts (``autocompress.augment``, TinyBERT's augmentation) join the training set with the
label ``UNLABELED``. For them the teacher is the only label: their loss is the soft-label loss
(weight 1, not ``1 - alpha``) plus the attention and hidden-state losses, never cross-entropy.
``epochs`` counts passes over that whole set.

Attention probabilities need the eager attention implementation (transformers' default, sdpa,
returns none); student and teacher are switched to eager for the run and switched back afterwards.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from autocompress.augment import augmented_copies
from autocompress.data import UNLABELED, TextDataset
from autocompress.language_model import TokenEncoded, token_distillation_loss
from autocompress.prompted import prompt_of
from autocompress.technique import ApplyContext, no_report
from autocompress.token_data import TaggedDataset
from autocompress.training import IGNORED, Encoded, TaggedEncoded, VectorEncoded, accuracy, encode, fine_tune

#: Validation examples scored for intermediate reports (a fixed, seeded subset).
EVAL_SUBSET = 512
ATTENTION_LOSSES = ("kl", "mse")


@dataclass(frozen=True)
class RecoverySettings:
    """Everything one recovery run needs; both recovery techniques build one from their Config."""

    learning_rate: float
    epochs: float
    batch_size: int
    eval_every: int = 0
    #: False: plain cross-entropy on the labels, no teacher.
    use_teacher: bool = True
    temperature: float = 2.0
    alpha: float = 0.5
    attention_weight: float = 0.0
    attention_loss: str = "kl"
    hidden_weight: float = 0.0
    #: Also train on the task's unlabeled texts (``TaskData.unlabeled``), when it has any.
    unlabeled: bool = False
    #: Add augmented copies of the labelled texts until the training set holds this many (0: none).
    augment_to: int = 0


def check_training_fields(config) -> None:
    """The training fields both recovery techniques share; ValueError with a readable message."""
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}")
    if not config.epochs > 0:
        raise ValueError(f"epochs must be > 0, got {config.epochs}")
    for name in ("batch_size", "eval_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
    if config.eval_every < 0:
        raise ValueError(f"eval_every must be >= 0 (0: once per epoch), got {config.eval_every}")
    if not config.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {config.temperature}")


# -- losses -----------------------------------------------------------------------------------
def soft_label_losses(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` of each example (T^2 keeps gradients in scale)."""
    log_student = torch.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = torch.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * nn.functional.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(-1)


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The soft-label loss averaged over the batch."""
    return soft_label_losses(student_logits, teacher_logits, temperature).mean()


def logit_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                            temperature: float, alpha: float) -> torch.Tensor:
    """Per example ``(1 - alpha) * soft-label loss + alpha * cross-entropy on the label``, or the
    soft-label loss alone for an example labelled ``UNLABELED``; averaged over the batch.

    Scores (float labels: a regression model with one output): the squared error to the teacher's
    score stands for the soft-label loss and the squared error to the label for cross-entropy; an
    unlabeled example's label is NaN (``temperature`` plays no part).

    Other task kinds' batches have their own form (``logit_loss_for``)."""
    if labels.is_floating_point():
        labelled = ~torch.isnan(labels)
        soft = (student_logits.float() - teacher_logits.float()).pow(2).mean(-1)
        hard = (student_logits[:, 0].float() - torch.nan_to_num(labels)).pow(2)
        return torch.where(labelled, (1.0 - alpha) * soft + alpha * hard, soft).mean()
    soft = soft_label_losses(student_logits, teacher_logits, temperature)
    labelled = labels != UNLABELED
    hard = nn.functional.cross_entropy(student_logits, labels.clamp_min(0), reduction="none")
    return torch.where(labelled, (1.0 - alpha) * soft + alpha * hard, soft).mean()


def tagged_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                             temperature: float, alpha: float) -> torch.Tensor:
    """Token classification (logits batch x tokens x tags, ``TaggedEncoded`` labels): the soft-label loss
    and cross-entropy mixed per token, averaged over the tokens whose label is not ``IGNORED`` (each
    word's first sub-token); a word tagged ``UNLABELED`` (an ``--unlabeled`` sentence's) has the
    soft-label loss alone."""
    counted = labels != IGNORED
    tagged = labels >= 0
    soft = soft_label_losses(student_logits, teacher_logits, temperature)
    hard = nn.functional.cross_entropy(student_logits.transpose(1, 2), torch.where(tagged, labels, IGNORED),
                                       ignore_index=IGNORED, reduction="none")
    return torch.where(tagged, (1.0 - alpha) * soft + alpha * hard, soft)[counted].mean()


def embedding_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                                temperature: float, alpha: float) -> torch.Tensor:
    """Sentence embeddings (``VectorEncoded``): ``embedding_loss`` between the student's and the teacher's
    embeddings (labels, temperature and alpha play no part: the teacher's embedding is the label)."""
    from autocompress.embedding import embedding_loss

    return embedding_loss(student_logits, teacher_logits)


def logit_loss_for(train: Encoded):
    """The distillation loss on the outputs for ``train``'s kind of batches, by its type: per predicted
    token for a language model's documents, per word for tagged words, between embeddings for vector
    labels, ``logit_distillation_loss`` for one label per text."""
    if isinstance(train, TokenEncoded):
        return token_distillation_loss
    if isinstance(train, TaggedEncoded):
        return tagged_distillation_loss
    if isinstance(train, VectorEncoded):
        return embedding_distillation_loss
    return logit_distillation_loss


def attention_map_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss between attention probabilities (batch, heads, query, key) over real (non-padding) query rows.

    Different head counts (pruned heads) are compared as head-averaged maps. ``kind`` is ``kl``
    (teacher || student, per query row) or ``mse``.
    """
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    rows = mask[:, None, :, None].to(student.dtype)  # (batch, 1, query, 1)
    count = rows.sum() * student.shape[1]
    if kind == "kl":
        # Padded keys have probability 0 in both maps; xlogy makes 0 * log 0 = 0.
        per_row = (torch.special.xlogy(teacher, teacher) - teacher * torch.log(student.clamp_min(1e-12))).sum(-1)
        return (per_row * rows[..., 0]).sum() / count
    squared = (student - teacher).pow(2).sum(-1, keepdim=True)
    return (squared * rows).sum() / (count * student.shape[-1])


def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                      projection: nn.Module | None = None) -> torch.Tensor:
    """Mean squared error between (projected) student and teacher states over real tokens."""
    if projection is not None:
        student = projection(student)
    weights = mask[..., None].to(student.dtype)
    return ((student - teacher).pow(2) * weights).sum() / (weights.sum() * teacher.shape[-1])


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer matched with each student layer: ``floor((i+1) * n_t / n_s + 1/2) - 1``."""
    return [max(1, min(teacher_layers, math.floor((i + 1) * teacher_layers / student_layers + 0.5))) - 1
            for i in range(student_layers)]


def check_distill_switch(config) -> None:
    """The fields of a recovery technique that trains toward the teacher or on the labels alone
    (``distill``, ``distill_alpha``: ``lora``, ``prompt_tuning``); ValueError with a readable message."""
    if not isinstance(config.distill, bool):
        raise ValueError(f"distill must be true or false, got {config.distill!r}")
    if not 0.0 <= config.distill_alpha <= 1.0:
        raise ValueError(f"distill_alpha must be in [0, 1], got {config.distill_alpha}")


def distill_switch_settings(config) -> RecoverySettings:
    """The recovery run of such a technique's Config: its training fields, the teacher on or off (``distill``)."""
    return RecoverySettings(learning_rate=config.learning_rate, epochs=config.epochs, batch_size=config.batch_size,
                            eval_every=config.eval_every, use_teacher=config.distill,
                            temperature=config.temperature, alpha=config.distill_alpha)


# -- the teacher's side -----------------------------------------------------------------------
@dataclass
class _LogitCacheEntry:
    teacher: weakref.ref
    logits: dict[tuple[int, ...], torch.Tensor]


#: Teacher logits on training splits: ``(id(teacher), data fingerprint, max_length)`` -> per-example logits.
TEACHER_LOGITS: dict[tuple[int, str, int], _LogitCacheEntry] = {}


def _logit_cache(teacher: nn.Module, fingerprint: str, max_length: int) -> dict[tuple[int, ...], torch.Tensor]:
    for key in [k for k, entry in TEACHER_LOGITS.items() if entry.teacher() is None]:
        del TEACHER_LOGITS[key]  # the teacher is gone; its id may be reused by another model
    key = (id(teacher), fingerprint, max_length)
    entry = TEACHER_LOGITS.get(key)
    if entry is None or entry.teacher() is not teacher:
        entry = TEACHER_LOGITS[key] = _LogitCacheEntry(weakref.ref(teacher), {})
    return entry.logits


def _rows(inputs: dict[str, torch.Tensor]) -> Iterator[tuple[int, ...]]:
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        yield tuple(ids[mask.bool()].tolist())


def teacher_inputs(inputs: dict[str, torch.Tensor], token_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """``inputs`` (student token ids) as the teacher's: ids translated through ``token_map``, and the
    positions it maps to -1 (tokens the teacher never sees: a soft prompt's) dropped from every
    per-token tensor. Every row must hold as many of them (a soft prompt is in front of every text)."""
    ids = token_map[inputs["input_ids"]]
    keep = ids >= 0
    if bool(keep.all()):
        return {**inputs, "input_ids": ids}
    kept = keep.sum(dim=1)
    if bool((kept != kept[0]).any()):
        raise ValueError("the student's rows hold different numbers of tokens the teacher never sees "
                         "(token_map -1), so the teacher's inputs cannot be formed")
    rows, width = ids.shape[0], int(kept[0])
    result = {name: value[keep].view(rows, width) if isinstance(value, torch.Tensor) and value.shape == ids.shape
              else value for name, value in inputs.items()}
    result["input_ids"] = ids[keep].view(rows, width)
    return result


class TeacherSignals:
    """The teacher's logits (cached for the training split) and, per batch, its hidden states/attentions.

    A language model's logits (sequence x vocabulary per example) are far too big to keep for a
    split: for encoded documents (``TokenEncoded``) they are computed per batch, never cached."""

    def __init__(self, teacher: nn.Module, context: ApplyContext, train: Encoded):
        self.teacher = teacher
        self.token_map = context.token_map
        self.per_batch = isinstance(train, TokenEncoded)
        if self.per_batch:
            return
        self.cache = _logit_cache(teacher, context.data.fingerprint(), context.max_length)
        self._fill(train)

    def teacher_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Student inputs in the teacher's token ids (``context.token_map``, when a step changed them)."""
        if self.token_map is None:
            return inputs
        return teacher_inputs(inputs, self.token_map)

    def _fill(self, train: Encoded) -> None:
        missing, offset = [], 0
        for inputs, _ in train.batches(256):
            rows = list(_rows(self.teacher_inputs(inputs)))
            missing += [offset + i for i, row in enumerate(rows) if row not in self.cache]
            offset += len(rows)
        if not missing:
            return
        missing_rows = train.subset(missing)
        with torch.inference_mode():
            for inputs, _ in missing_rows.batches(64):
                inputs = self.teacher_inputs(inputs)
                logits = self.teacher(**inputs).logits.float()
                for row, value in zip(_rows(inputs), logits, strict=True):
                    # Per-token logits: the row's own tokens only, not the padding of this batch.
                    self.cache[row] = (value[: len(row)] if value.dim() == 2 else value).clone()

    def logits(self, teacher_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.per_batch:
            with torch.no_grad():
                return self.teacher(**teacher_inputs).logits.float()
        values = [self.cache[row] for row in _rows(teacher_inputs)]
        if values and values[0].dim() == 2:  # per-token logits, padded with zeros to the batch's width
            width = teacher_inputs["input_ids"].shape[1]
            values = [nn.functional.pad(value, (0, 0, 0, width - value.shape[0])) for value in values]
        return torch.stack(values)

    def internals(self, teacher_inputs: dict[str, torch.Tensor], hidden: bool, attention: bool):
        with torch.no_grad():
            return self.teacher(**teacher_inputs, output_hidden_states=hidden, output_attentions=attention)


class StudentWithOutputs(nn.Module):
    """Wraps the student for training: asks for hidden states/attentions, keeps the last outputs.

    Also owns the width projections, so one optimiser trains them with the student.
    """

    def __init__(self, student: nn.Module, hidden: bool, attention: bool, projections: nn.ModuleList | None):
        super().__init__()
        self.student = student
        self.hidden, self.attention = hidden, attention
        self.projections = projections
        self.last_outputs = None

    def forward(self, **inputs):
        outputs = self.student(**inputs, output_hidden_states=self.hidden or None,
                               output_attentions=self.attention or None)
        self.last_outputs = outputs
        return outputs


@contextmanager
def eager_attention(*models: nn.Module) -> Iterator[None]:
    """Switch models to eager attention (the only one that returns attention maps), then back."""
    previous = [model.config._attn_implementation for model in models]
    try:
        for model in models:
            model.set_attn_implementation("eager")
        yield
    finally:
        for model, implementation in zip(models, previous, strict=True):
            model.set_attn_implementation(implementation)


def _hidden_width(model: nn.Module) -> int:
    return model.get_input_embeddings().embedding_dim


def _num_layers(model: nn.Module) -> int:
    config = model.config
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError(f"cannot tell the layer count of {type(config).__name__}")


def layer_map(teacher: nn.Module, context: ApplyContext) -> list[int]:
    """Teacher layer index for each student layer (``context.layer_origin``, or uniform)."""
    n_student, n_teacher = context.adapter.num_layers(), _num_layers(teacher)
    origin = context.layer_origin
    if origin is not None and len(origin) == n_student and all(0 <= i < n_teacher for i in origin):
        return list(origin)
    return uniform_layer_map(n_student, n_teacher)


# -- training ---------------------------------------------------------------------------------
def evaluation_subset(context: ApplyContext) -> Encoded:
    """A fixed, seeded subset (at most ``EVAL_SUBSET``) of the validation split, encoded."""
    validation = context.data.validation
    index = list(range(len(validation)))
    if len(index) > EVAL_SUBSET:
        index = sorted(random.Random(context.seed).sample(index, EVAL_SUBSET))
    subset = validation.subset(index)
    return encode(context.tokenizer, subset, context.max_length)


def _report_callback(model: nn.Module, context: ApplyContext, settings: RecoverySettings,
                     steps_per_epoch: int) -> Callable[[int, int], None] | None:
    """Evaluates on the validation subset and reports to ``context.report`` every ``eval_every``
    steps; None when nobody listens (outside a search): evaluating changes nothing in training."""
    if context.report is no_report:
        return None
    validation = evaluation_subset(context)
    every = settings.eval_every or steps_per_epoch
    quality = context.quality or accuracy

    def on_step(step: int, total: int) -> None:
        if step % every == 0 or step == total:
            context.report(step, quality(model, validation))  # may raise optuna.TrialPruned

    return on_step


def training_set(context: ApplyContext, settings: RecoverySettings) -> TextDataset:
    """What recovery trains on: the labelled training split, then (with the teacher only) the
    task's unlabeled texts and augmented copies of the labelled texts up to ``augment_to`` in all."""
    data = context.data
    if not settings.use_teacher:
        return data.train
    extra = []
    if settings.unlabeled and data.unlabeled is not None:
        extra.append(data.unlabeled)
    missing = settings.augment_to - len(data.train) - sum(len(part) for part in extra)
    if missing > 0:
        if isinstance(data.train, TaggedDataset):
            raise ValueError("augment_to: word-replaced copies of tagged sentences (token classification) are not "
                             "supported; set augment_to to 0")
        if prompt_of(context.teacher) is not None:
            raise ValueError("augment_to: a prompted causal LM's texts are rendered prompts, whose template words "
                             "must not be replaced; use --unlabeled texts instead")
        embeddings = context.teacher.get_input_embeddings().weight.detach()
        extra.append(augmented_copies(data.train, missing, context.tokenizer, embeddings, context.token_map,
                                      seed=context.seed))
    if data.regression:  # a score task marks an unlabeled example with NaN (-1 is a score)
        extra = [replace(part, labels=[math.nan] * len(part)) for part in extra]
    if data.train.vectors:  # an embedding task: the teacher embeds the extra texts during training
        width = len(data.train.labels[0])
        extra = [replace(part, labels=[[math.nan] * width] * len(part)) for part in extra]
    return data.train.concat(*extra)


def train_student(student: nn.Module, context: ApplyContext, settings: RecoverySettings,
                  label: str = "recovery") -> nn.Module:
    """Train ``student`` in place on ``training_set`` with the distillation loss (or plain CE on
    the labelled split).

    ``label`` names the calling technique in error messages. Returns the student.
    """
    if context.data is None:
        raise ValueError(f"{label} needs the task's data (context.data is None)")
    if settings.use_teacher and context.teacher is None:
        raise ValueError(f"{label} needs a teacher model (context.teacher is None)")
    train = encode(context.tokenizer, training_set(context, settings), context.max_length)
    if len(train) == 0:
        raise ValueError(f"{label}: the training split is empty")
    on_step = _report_callback(student, context, settings, math.ceil(len(train) / settings.batch_size))
    common = dict(epochs=settings.epochs, learning_rate=settings.learning_rate, batch_size=settings.batch_size,
                  seed=context.seed, on_step=on_step)
    if not settings.use_teacher:
        return fine_tune(student, train, **common)

    teacher = context.teacher
    teacher_was_training = teacher.training
    teacher.eval()
    try:
        signals = TeacherSignals(teacher, context, train)
        hidden, attention = settings.hidden_weight > 0, settings.attention_weight > 0
        if (hidden or attention) and context.token_map is not None and bool((context.token_map < 0).any()):
            raise ValueError(f"{label}: hidden-state and attention-map losses compare positions one to one, but the "
                             "student's inputs hold tokens the teacher never sees (a soft prompt); set their "
                             "weights to 0")
        mapping = layer_map(teacher, context) if hidden or attention else []
        projections = None
        if hidden and _hidden_width(student) != _hidden_width(teacher):
            projections = nn.ModuleList(nn.Linear(_hidden_width(student), _hidden_width(teacher))
                                        for _ in mapping)
        wrapper = StudentWithOutputs(student, hidden, attention, projections)

        # The data's type decides the loss: a token classifier's batches have the same shapes as a
        # language model's, and an embedding's label vectors the same as per-token labels.
        logit_loss = logit_loss_for(train)

        def loss_fn(inputs: dict, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            teacher_inputs = signals.teacher_inputs(inputs)
            loss = logit_loss(logits, signals.logits(teacher_inputs), labels, settings.temperature, settings.alpha)
            if not (hidden or attention):
                return loss
            mask = inputs["attention_mask"]
            theirs, ours = signals.internals(teacher_inputs, hidden, attention), wrapper.last_outputs
            for i, j in enumerate(mapping):
                if hidden:  # hidden_states[0] is the embedding output; layer i's output is i + 1
                    projection = projections[i] if projections is not None else None
                    loss = loss + settings.hidden_weight * hidden_state_loss(
                        ours.hidden_states[i + 1], theirs.hidden_states[j + 1], mask, projection)
                if attention:
                    loss = loss + settings.attention_weight * attention_map_loss(
                        ours.attentions[i], theirs.attentions[j], mask, settings.attention_loss)
            return loss

        models = (student, teacher) if attention else ()
        with eager_attention(*models):
            fine_tune(wrapper, train, loss_fn=loss_fn, **common)
    finally:
        teacher.train(teacher_was_training)
    student.eval()
    return student
