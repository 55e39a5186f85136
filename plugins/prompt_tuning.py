"""Prompt tuning: learn a few soft-prompt token embeddings that every input starts with (recovery).

Prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"; PEFT's
``PromptTuning``) is the source documents' prompt learning in its trainable form: ``num_tokens``
virtual tokens are put in front of every input and only their embeddings are trained, here toward
the teacher's outputs (soft labels + labels, as ``distillation``) or the labels alone. Every other
weight stays as the earlier steps left it, so a model the structure steps broke a little can win
back accuracy for ``num_tokens x hidden`` trained numbers.

**How the soft prompt is kept.** The virtual tokens are added tokens of the tokenizer
(``<|soft_prompt_0|>`` ...), and the tokenizer's post-processor puts them in front of every text
(after its start token, when it has one); their learned embeddings are new rows of the model's
input-embedding table. So the result is a plain transformers classifier and tokenizer: saving,
``load_pretrained``, ``transformers.pipeline``, ONNX export and the targets need to know nothing
about soft prompts, and a caller's ``tokenizer(text)`` adds them. PEFT's own prompt tuning is not
used because it feeds the classifier ``inputs_embeds``: a decoder classifier then cannot find each
row's last real token (it reads it from ``input_ids``), and the model would stay a PEFT wrapper.

The step records its ``State`` (the first soft id, the count and the table's new size) like a
structure step, since it adds embedding rows; on load ``rebuild`` grows the table again. It sets
``context.token_map`` to -1 for the soft ids: the teacher never sees them (``autocompress.distill``
drops them from the teacher's inputs), and the teacher's cached logits are found as before.

**Supported models:** sequence classifiers of causal (decoder) families, the prompted classifiers
of ``autocompress.prompted`` first of all, with a fast tokenizer whose post-processor is a
template, BERT/RoBERTa processing, byte-level or none. An encoder classifier is refused (its
weights are trained directly: ``distillation``, ``lora``), as is a causal LM itself (the
language-model task's texts are documents, not prompts).

**Cost:** ``num_tokens`` more tokens in every prompt. Latency is measured on a fixed number of
tokens (``--seq-len``), so the measured time to first token does not include them: for
``num_tokens`` 8 and a 64-token prompt, prefill does about 12% more work than measured. The time
per generated token grows by the attention over ``num_tokens`` more cached positions, which is
negligible next to the weights' cost at batch 1. The table grows by ``num_tokens`` rows.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.distill import check_distill_switch, check_training_fields, distill_switch_settings, train_student
from autocompress.technique import ApplyContext, ModelAndTokenizer, Stage, Technique

#: The added tokens' spelling; ``{i}`` is the position in the soft prompt.
TOKEN = "<|soft_prompt_{i}|>"
INITS = ("template", "vocabulary")
#: Post-processors the soft prompt can be put into (others: the technique refuses the tokenizer).
PROCESSORS = ("TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel", "Sequence")


@dataclass(frozen=True)
class PromptTuningConfig:
    #: Virtual tokens in front of every input.
    num_tokens: int = 8
    #: Their starting embeddings: ``template``, the embeddings of the prompt's own tokens (the tokens
    #: of every training text's first words, cycled: the template's fixed words for a prompted
    #: classifier), as Lester et al.'s text initialisation; ``vocabulary``, random rows of the table.
    init: str = "template"
    learning_rate: float = 3e-3
    #: Passes over the training split; fractions allowed.
    epochs: float = 1.0
    batch_size: int = 16
    #: Train toward the teacher's soft labels (True) or on the labels alone (False).
    distill: bool = True
    #: Softmax temperature of the soft-label loss.
    temperature: float = 2.0
    #: Weight of the hard-label cross-entropy when distilling; the soft-label loss gets 1 - distill_alpha.
    distill_alpha: float = 0.5
    #: Report validation accuracy every this many steps (0: once per epoch) so a pruner can stop the trial.
    eval_every: int = 100

    def __post_init__(self):
        check_training_fields(self)
        if isinstance(self.num_tokens, bool) or not isinstance(self.num_tokens, int) or not 1 <= self.num_tokens <= 64:
            raise ValueError(f"num_tokens must be an integer in [1, 64], got {self.num_tokens!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        check_distill_switch(self)


@dataclass(frozen=True)
class PromptTuningState:
    #: The first soft token's id; the soft tokens are ``first_id .. first_id + num_tokens - 1``.
    first_id: int
    num_tokens: int
    #: Rows of the input-embedding table after the step.
    vocabulary: int


# -- the tokenizer ------------------------------------------------------------------------------
def _backend_state(tokenizer: Any) -> dict[str, Any] | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return json.loads(backend.to_str()) if backend is not None else None


def _unsupported_processor(processor: dict[str, Any] | None) -> str | None:
    if processor is None:
        return None
    kind = processor.get("type")
    if kind not in PROCESSORS:
        return f"its tokenizer's post-processor is {kind}, which prompt tuning cannot put a soft prompt into"
    if kind == "Sequence":
        inner = processor.get("processors") or []
        merging = [p for p in inner if p.get("type") != "ByteLevel"]
        if len(merging) > 1:
            return "its tokenizer's post-processor is a sequence of several templates"
        return next(filter(None, map(_unsupported_processor, inner)), None)
    return None


def _special(name: str) -> dict[str, Any]:
    return {"SpecialToken": {"id": name, "type_id": 0}}


def _sequence(which: str, type_id: int) -> dict[str, Any]:
    return {"Sequence": {"id": which, "type_id": type_id}}


def _template(single: list[dict], pair: list[dict], specials: dict[str, int]) -> dict[str, Any]:
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {name: {"id": name, "ids": [i], "tokens": [name]} for name, i in specials.items()}}


def with_soft_prompt(processor: dict[str, Any] | None, soft: dict[str, int]) -> dict[str, Any]:
    """The post-processor (tokenizer.json form) with the soft tokens ``soft`` (name -> id) put in front of
    the first sequence, after any start token: ``[CLS] soft... $A [SEP]``, ``<s> soft... $A``, ``soft... $A``."""
    names = [_special(name) for name in soft]
    if processor is None or processor.get("type") == "ByteLevel":
        template = _template([*names, _sequence("A", 0)], [*names, _sequence("A", 0), _sequence("B", 1)], soft)
        return template if processor is None else {"type": "Sequence", "processors": [processor, template]}
    kind = processor["type"]
    if kind == "Sequence":
        inner = list(processor.get("processors") or [])
        index = next((i for i, p in enumerate(inner) if p.get("type") != "ByteLevel"), None)
        if index is None:
            return {"type": "Sequence", "processors": [*inner, with_soft_prompt(None, soft)]}
        inner[index] = with_soft_prompt(inner[index], soft)
        return {"type": "Sequence", "processors": inner}
    if kind in ("BertProcessing", "RobertaProcessing"):
        (cls, cls_id), (sep, sep_id) = processor["cls"], processor["sep"]
        start, end = _special(cls), _special(sep)
        if kind == "BertProcessing":  # [CLS] A [SEP] B [SEP], B's tokens of type 1
            pair = [start, *names, _sequence("A", 0), end, _sequence("B", 1),
                    {"SpecialToken": {"id": sep, "type_id": 1}}]
        else:  # RoBERTa: <s> A </s></s> B </s>, one type
            pair = [start, *names, _sequence("A", 0), end, end, _sequence("B", 0), end]
        return _template([start, *names, _sequence("A", 0), end], pair, {cls: cls_id, sep: sep_id, **soft})
    # TemplateProcessing: in front of $A, in both templates.
    result = dict(processor)
    for key in ("single", "pair"):
        items = list(processor[key])
        at = next(i for i, item in enumerate(items) if "Sequence" in item)
        result[key] = items[:at] + names + items[at:]
    result["special_tokens"] = {**processor.get("special_tokens", {}),
                                **_template([], [], soft)["special_tokens"]}
    return result


def soft_prompt_tokenizer(tokenizer: Any, num_tokens: int) -> tuple[Any, list[int]]:
    """A copy of ``tokenizer`` that puts ``num_tokens`` soft tokens in front of every text, and their ids.

    Written with ``save_pretrained`` and reloaded with ``from_pretrained``, so the object returned
    is what a saved candidate reloads to."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    names = [TOKEN.format(i=i) for i in range(num_tokens)]
    with tempfile.TemporaryDirectory(prefix="prompt_tuning-") as tmp:
        tokenizer.save_pretrained(tmp)
        copy = type(tokenizer).from_pretrained(tmp, local_files_only=True)
        taken = [name for name in names if name in copy.get_vocab()]
        if taken:
            raise ValueError(f"the tokenizer already has soft-prompt tokens ({', '.join(taken[:3])}): prompt tuning "
                             "was applied once already")
        copy.add_tokens(names, special_tokens=True)
        ids = copy.convert_tokens_to_ids(names)
        state = _backend_state(copy)
        state["post_processor"] = with_soft_prompt(state.get("post_processor"), dict(zip(names, ids, strict=True)))
        copy.save_pretrained(tmp)
        directory = Path(tmp)
        (directory / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False))
        # A family's own tokenizer class may rebuild its post-processor when it is loaded (BERT's,
        # Llama's: from their cls/bos settings), which would drop the soft prompt; the generic class
        # takes tokenizer.json as written, and so does AutoTokenizer when the config names it.
        settings = json.loads((directory / "tokenizer_config.json").read_text())
        settings["tokenizer_class"] = PreTrainedTokenizerFast.__name__
        (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False))
        result = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    for attribute in ("truncation_side", "padding_side"):  # set on the object, not always saved
        setattr(result, attribute, getattr(tokenizer, attribute))
    probe = result("x")["input_ids"]
    if any(i not in probe for i in ids):
        raise ValueError(f"{type(tokenizer).__name__} rebuilt its post-processor on load and dropped the soft prompt")
    return result, ids


# -- the embedding table ------------------------------------------------------------------------
class SoftPromptEmbedding(nn.Module):
    """The input embeddings while the soft prompt trains: the table (frozen) for every id but the soft
    ones, which read ``soft`` (trained). Replaced by one plain table once training is over."""

    def __init__(self, table: nn.Embedding, first_id: int, soft: nn.Parameter):
        super().__init__()
        self.table, self.first_id, self.soft = table, first_id, soft

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        position = input_ids - self.first_id
        is_soft = (position >= 0) & (position < len(self.soft))
        rows = self.table(torch.where(is_soft, 0, input_ids))
        return torch.where(is_soft[..., None], self.soft[position.clamp(0, len(self.soft) - 1)].to(rows.dtype), rows)


def grown_table(table: nn.Embedding, rows: int) -> nn.Embedding:
    """A table like ``table`` with ``rows`` rows: its own first, the new ones zero (filled by the caller or load)."""
    grown = nn.Embedding(rows, table.embedding_dim, padding_idx=table.padding_idx, dtype=table.weight.dtype)
    with torch.no_grad():
        grown.weight.zero_()
        grown.weight[: table.num_embeddings] = table.weight
    return grown


def initial_rows(table: nn.Embedding, config: PromptTuningConfig, context: ApplyContext,
                 specials: set[int]) -> torch.Tensor:
    """The soft prompt's starting embeddings (``config.init``)."""
    generator = torch.Generator().manual_seed(context.seed)
    if config.init == "template":
        # The training texts' leading tokens: for a prompted classifier every text starts with the
        # template's fixed words ("Review:"), which say what the task is.
        texts = list(context.data.train.texts[:1]) if context.data is not None else []
        ids = [i for i in context.tokenizer(texts, add_special_tokens=False)["input_ids"][0] if i not in specials] \
            if texts else []
        if ids:
            picked = torch.tensor([ids[i % len(ids)] for i in range(config.num_tokens)])
            return table.weight.detach()[picked].clone()
    picked = torch.randint(0, table.num_embeddings, (config.num_tokens,), generator=generator)
    return table.weight.detach()[picked].clone()


class PromptTuning(Technique):
    name = "prompt_tuning"
    stage = Stage.RECOVER
    Config = PromptTuningConfig
    State = PromptTuningState
    description = ("learn soft-prompt token embeddings in front of every input (prompt tuning), toward the "
                   "teacher's outputs; a decoder classifier's other weights stay as they are")

    @classmethod
    def unsupported_reason_for(cls, model: ModelAndTokenizer) -> str | None:
        if not model.adapter.causal:
            return ("soft prompts are for decoder models used as classifiers (prompt learning); an encoder "
                    "classifier's own weights are trained instead (distillation, lora)")
        if model.model.get_output_embeddings() is not None:
            return "a causal language model's texts are documents, not prompts; prompt tuning needs a classifier"
        if not isinstance(model.model.get_input_embeddings(), nn.Embedding):
            return "its input embeddings are not one embedding table"
        state = _backend_state(model.tokenizer)
        if state is None:
            return f"its tokenizer ({type(model.tokenizer).__name__}) is not a fast tokenizer"
        return _unsupported_processor(state.get("post_processor"))

    def apply(self, model, config: PromptTuningConfig, context: ApplyContext):
        if context.data is None:
            raise ValueError("prompt_tuning needs the task's data (context.data is None)")
        if config.distill and context.teacher is None:
            raise ValueError("prompt_tuning with distill needs the teacher (context.teacher is None)")
        table = model.get_input_embeddings()
        if not isinstance(table, nn.Embedding):
            raise ValueError(f"the input embeddings are a {type(table).__name__}, not one embedding table")
        tokenizer, ids = soft_prompt_tokenizer(context.tokenizer, config.num_tokens)
        first = ids[0]
        if ids != list(range(first, first + config.num_tokens)) or first > table.num_embeddings:
            raise ValueError(f"the soft tokens got ids {ids[0]}..{ids[-1]}, not next to the embedding table's "
                             f"{table.num_embeddings} rows")
        rows = max(table.num_embeddings, first + config.num_tokens)
        specials = set(context.tokenizer.all_special_ids)
        soft = nn.Parameter(initial_rows(table, config, context, specials).float())
        old_map = context.token_map if context.token_map is not None else torch.arange(table.num_embeddings)
        token_map = torch.cat([old_map, torch.arange(len(old_map), rows)])
        token_map[first: first + config.num_tokens] = -1  # the teacher never sees a soft token
        context.tokenizer, context.token_map = tokenizer, token_map

        trainable = {name: p.requires_grad for name, p in model.named_parameters()}
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.set_input_embeddings(SoftPromptEmbedding(table, first, soft))
        try:
            settings = distill_switch_settings(config)
            train_student(model, context, settings, label=self.name)
        finally:
            model.set_input_embeddings(table)
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(trainable.get(name, True))
        grown = grown_table(table, rows)
        with torch.no_grad():
            grown.weight[first: first + config.num_tokens] = soft.detach().to(grown.weight.dtype)
        grown.weight.requires_grad_(table.weight.requires_grad)
        model.set_input_embeddings(grown)
        model.config.vocab_size = rows
        context.record(PromptTuningState(first_id=first, num_tokens=config.num_tokens, vocabulary=rows))
        return model.eval()

    def rebuild(self, model, config: PromptTuningConfig, state: PromptTuningState, context: ApplyContext):
        model.set_input_embeddings(grown_table(model.get_input_embeddings(), state.vocabulary))
        return model


@hookimpl
def autocompress_register_techniques(register):
    register.add(PromptTuning)
