"""LoRA recovery: train low-rank adapters instead of all weights, then merge them in.

Recovery stage. The student is wrapped with PEFT LoRA adapters (``task_type=SEQ_CLS``) on the
linears the architecture adapter names: attention q/k/v/output (``targets="attention"``), FFN
in/out (``"ffn"``) or both. The classification head (every linear outside the encoder, e.g.
BERT's ``classifier``, DistilBERT's ``pre_classifier`` and ``classifier``) is trained fully
through ``modules_to_save``. Layer widths may differ after pruning; each adapter takes its
linear's own shape. A linear replaced by a low-rank factorisation (``nn.Sequential`` of two thin
linears) gets one adapter on each thin linear: merged, they stay thin, so the factorisation and
its latency are kept.

Training uses the distillation loss of ``autocompress.distill`` (teacher soft labels at
``temperature``, mixed with the labels by ``distill_alpha``) when ``distill`` is on, plain
cross-entropy otherwise. ``distillation`` and ``lora`` both train in the recovery stage and
cannot see each other, so ``distillation`` declares a conflict with ``lora`` (a plan never trains
twice) and "LoRA + distillation" is this technique with ``distill=True``.

After training the adapters are merged into the weights (``merge_and_unload``): the returned
model is the plain transformers model it was given, with the same modules, parameter count and
latency, no PEFT module left, and every parameter's ``requires_grad`` as before.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.arch import ArchitectureAdapter, get_module
from autocompress.distill import check_distill_switch, check_training_fields, distill_switch_settings, train_student
from autocompress.technique import ApplyContext, Stage, Technique

TARGETS = ("attention", "ffn", "both")


@dataclass(frozen=True)
class LoraRecoveryConfig:
    #: Rank of each adapter.
    rank: int = 8
    #: LoRA scaling numerator: the update is (alpha / rank) * B A.
    alpha: float = 16.0
    #: Dropout on the adapters' input.
    dropout: float = 0.05
    #: Which linears get adapters: attention (q/k/v/output), ffn (in/out) or both.
    targets: str = "attention"
    learning_rate: float = 5e-4
    #: Passes over the training split; fractions allowed.
    epochs: float = 1.0
    batch_size: int = 32
    #: Train toward the teacher's soft labels (True) or on the labels alone (False).
    distill: bool = True
    #: Softmax temperature of the soft-label loss.
    temperature: float = 2.0
    #: Weight of the hard-label cross-entropy when distilling; the soft-label loss gets 1 - distill_alpha.
    distill_alpha: float = 0.5
    #: Report validation accuracy every this many steps (0: once per epoch) so a pruner can stop the trial.
    #: 100 steps (about a third of an epoch on the demo data) lets the pruner stop a weak trial before the
    #: end: reporting only at the end of a 1-epoch run gave it nothing to save (measured in a demo search).
    eval_every: int = 100

    def __post_init__(self):
        check_training_fields(self)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout <= 0.5:
            raise ValueError(f"dropout must be in [0, 0.5], got {self.dropout}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        check_distill_switch(self)


def target_module_names(model: nn.Module, adapter: ArchitectureAdapter, targets: str) -> list[str]:
    """Full names of the linears that get adapters (thin halves of low-rank pairs included)."""
    names = []
    for paths in adapter.all_layer_paths():
        chosen = []
        if targets in ("attention", "both"):
            chosen += paths.attention_linears
        if targets in ("ffn", "both"):
            chosen += [*paths.ffn_inputs, paths.ffn_out]
        for path in chosen:
            module = get_module(model, path)
            if isinstance(module, nn.Linear):
                names.append(path)
            else:  # a low-rank factorisation: adapt its thin linears
                names += [f"{path}.{child}" for child, sub in module.named_children() if isinstance(sub, nn.Linear)]
    return names


def head_module_names(model: nn.Module) -> list[str]:
    """Linears outside the encoder (the classification head), trained fully; never a language
    model's output head (vocabulary-sized, and often tied to the input embeddings)."""
    prefix = model.base_model_prefix + "."
    output = model.get_output_embeddings()
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name and not name.startswith(prefix) and module is not output]


class LoraRecovery(Technique):
    name = "lora"
    stage = Stage.RECOVER
    Config = LoraRecoveryConfig
    description = "train LoRA adapters (with distillation from the teacher) and merge them into the weights"

    def apply(self, model, config: LoraRecoveryConfig, context: ApplyContext):
        from peft import LoraConfig, TaskType, get_peft_model

        if context.data is None:
            raise ValueError("lora needs the task's data (context.data is None)")
        if config.distill and context.teacher is None:
            raise ValueError("lora with distill=true needs the fine-tuned teacher (context.teacher is None); "
                             "set distill: false to train on the labels alone")
        targets = target_module_names(model, context.adapter, config.targets)
        if not targets:
            raise ValueError(f"lora found no linear layers for targets={config.targets!r}")
        requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        causal_lm = model.get_output_embeddings() is not None  # a language model: no classification head
        task_type = TaskType.CAUSAL_LM if causal_lm else TaskType.SEQ_CLS
        lora_config = LoraConfig(task_type=task_type, r=config.rank, lora_alpha=config.alpha,
                                 lora_dropout=config.dropout, target_modules=targets,
                                 modules_to_save=head_module_names(model))
        torch.manual_seed(context.seed)  # adapter initialisation
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, lora_config)
        settings = distill_switch_settings(config)
        try:
            train_student(peft_model, context, settings, label=self.name)
        except BaseException:
            peft_model.unload()  # the caller's model without adapter modules, whatever happened
            _restore_requires_grad(model, requires_grad)
            raise
        merged = peft_model.merge_and_unload()
        _restore_requires_grad(merged, requires_grad)
        return merged.eval()


def _restore_requires_grad(model: nn.Module, requires_grad: dict[str, bool]) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(requires_grad.get(name, True))


@hookimpl
def autocompress_register_techniques(register):
    register.add(LoraRecovery)
