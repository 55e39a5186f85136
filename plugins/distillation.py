"""Knowledge distillation: train the compressed student toward the fine-tuned teacher.

Recovery stage: the student is whatever the structure steps left (dropped layers, pruned heads and
FFN neurons, low-rank linears, a trimmed vocabulary); all of its weights are trained on the
task's training split against the teacher's temperature-softened outputs plus the labels,
optionally also toward the teacher's attention maps and hidden states (multi-dimensional
distillation, with a layer mapping when the student has fewer layers). The losses, the teacher
logit cache and the training loop live in ``autocompress.distill``, shared with ``lora``.

``distillation`` and ``lora`` both train the student in the recovery stage, and techniques do
not see each other, so one plan must never hold both (it would train twice). ``distillation``
declares ``conflicts = {"lora"}``; ``lora`` has its own ``distill`` switch and uses the same
soft-label loss, so "LoRA + distillation" is the plan that contains ``lora`` alone.

Little labelled data: the student also learns from the teacher's outputs on the task's unlabeled
texts (``--unlabeled``, used when present) and, with ``augment_to``, on word-replaced copies of
the labelled texts (TinyBERT's augmentation); see ``autocompress.distill``.

Training changes no shape: latency and memory are those measured before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from autocompress import hookimpl
from autocompress.distill import ATTENTION_LOSSES, RecoverySettings, check_training_fields, train_student
from autocompress.technique import ApplyContext, Stage, Technique


@dataclass(frozen=True)
class DistillationConfig:
    #: Softmax temperature of the soft-label loss (higher: softer teacher distribution).
    temperature: float = 2.0
    #: Weight of the hard-label cross-entropy; the soft-label loss gets 1 - alpha.
    alpha: float = 0.5
    #: Weight of the attention-map loss (0: off, and no eager attention or extra teacher pass).
    attention_weight: float = 0.0
    #: How attention maps are compared: kl (teacher || student per query row) or mse.
    attention_loss: str = "kl"
    #: Weight of the hidden-state MSE (0: off, and no extra teacher pass per batch).
    hidden_weight: float = 0.0
    learning_rate: float = 5e-5
    #: Passes over the training split; fractions allowed.
    epochs: float = 1.0
    batch_size: int = 32
    #: Report validation accuracy every this many steps (0: once per epoch) so a pruner can stop the trial.
    #: 100 steps (about a third of an epoch on the demo data) lets the pruner stop a weak trial before the
    #: end: reporting only at the end of a 1-epoch run gave it nothing to save (measured in a demo search).
    eval_every: int = 100
    #: Also distil on the task's unlabeled texts (``--unlabeled``), when it has any: the teacher labels them.
    unlabeled: bool = True
    #: Add word-replaced copies of the labelled texts (TinyBERT's augmentation, ``autocompress.augment``)
    #: until the training set holds this many texts; 0: none. The teacher labels the copies.
    augment_to: int = 0

    def __post_init__(self):
        check_training_fields(self)
        if not isinstance(self.unlabeled, bool):
            raise ValueError(f"unlabeled must be true or false, got {self.unlabeled!r}")
        if isinstance(self.augment_to, bool) or not isinstance(self.augment_to, int) or self.augment_to < 0:
            raise ValueError(f"augment_to must be a whole number >= 0, got {self.augment_to!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for name in ("attention_weight", "hidden_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.attention_loss not in ATTENTION_LOSSES:
            raise ValueError(f"attention_loss must be one of {', '.join(ATTENTION_LOSSES)}, "
                             f"got {self.attention_loss!r}")


class Distillation(Technique):
    name = "distillation"
    stage = Stage.RECOVER
    Config = DistillationConfig
    conflicts = frozenset({"lora"})
    description = ("train the student toward the teacher: soft labels + labels, optional attention/hidden states, "
                   "also on unlabeled texts and augmented copies")

    def apply(self, model, config: DistillationConfig, context: ApplyContext):
        if context.teacher is None:
            raise ValueError("distillation needs the fine-tuned teacher (context.teacher is None)")
        if context.data is None:
            raise ValueError("distillation needs the task's data (context.data is None)")
        settings = RecoverySettings(
            learning_rate=config.learning_rate, epochs=config.epochs, batch_size=config.batch_size,
            eval_every=config.eval_every, temperature=config.temperature, alpha=config.alpha,
            attention_weight=config.attention_weight, attention_loss=config.attention_loss,
            hidden_weight=config.hidden_weight, unlabeled=config.unlabeled, augment_to=config.augment_to,
        )
        return train_student(model, context, settings, label=self.name)


@hookimpl
def autocompress_register_techniques(register):
    register.add(Distillation)
