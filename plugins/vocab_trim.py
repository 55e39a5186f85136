"""Vocabulary trimming: keep only the token embeddings the task's training texts use.

In a small encoder the token embedding matrix is a large share of all weights (about half in
MiniLM-L6), yet one task's texts use a few thousand of its 30k tokens. Kept: every token the
training texts (the task's unlabeled texts included, ``TaskData.training_texts``) produce at least
``min_count`` times, every special/added token of the
tokenizer, and the ids the model config names (pad/bos/eos...). Rows are kept in old-id order.

The tokenizer is rewritten to match: its vocabulary maps each kept token to its new index, and
the ids in its post-processor ([CLS]/[SEP]), added tokens and padding are remapped. WordPiece is
greedy longest-match-first over the vocabulary, and the trimmed vocabulary is a subset of the old
one, so a word whose pieces all survived tokenizes exactly as before: text made of such words
gives the same outputs before and after. A word that needs a dropped piece falls back to shorter
surviving pieces or becomes [UNK].

Token counts come from the training texts without truncation: a token seen only past
``max_length`` in training can still occur early in another input, and counting whole texts
keeps the trimmed model independent of the max length used at deployment.

The new tokenizer replaces ``context.tokenizer``. ``context.token_map`` maps each new id to the
teacher's id (composed with any map an earlier step set), so a later step that feeds the
untrimmed teacher (distillation) can translate student inputs with ``token_map[input_ids]``.
The kept old ids are the step's recorded state; on load, ``rebuild`` trims the embedding rows of
a model built from the original configuration to them.

**Byte-level BPE** (GPT-2, RoBERTa, SmolLM2, Llama 3, Qwen): the kept tokens are closed under
their merges (both parts of every merge that makes a kept token stay, and the 256 byte symbols
every text is spelled in), and a merge stays when its parts and its result stay, in its rank
(``bpe_closure``). BPE applies the lowest-ranked merge among adjacent pairs at each step; a word the
training texts spelled used only merges of its own tokens' merge trees, all kept, so it tokenizes
exactly as before, and any other text still tokenizes, in more, shorter pieces (never unknown).
For a decoder with a tied output head (SmolLM2) this also cuts the head: the prompted classifier
generates through its trimmed table (``autocompress.prompted.causal_lm_of``), so the time per
generated token drops with the vocabulary. A causal LM itself is refused: its head would no longer
be able to predict a cut token.

Support is decided by the tokenizer the model comes with, not by the model family: any model
whose tokenizer is a WordPiece or byte-level BPE fast tokenizer (BERT, DistilBERT, ELECTRA, MiniLM,
RoBERTa with either, GPT-2 and Llama-layout decoders used as classifiers) is trimmed; a Unigram or
SentencePiece-style BPE vocabulary is refused, since it cannot be cut without rewriting its
scores, or without words losing every piece.

RoBERTa-layout models number positions from the padding id + 1, so the padding id must not move:
every id up to it is kept (with a WordPiece vocabulary that is usually [PAD] = 0 alone).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.arch import ArchitectureAdapter, get_module, set_module
from autocompress.technique import ApplyContext, ModelAndTokenizer, Stage, Technique

#: Config attributes holding token ids, remapped with the vocabulary.
CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")


@dataclass(frozen=True)
class VocabTrimConfig:
    #: A token is kept when the training texts contain it at least this many times (specials always).
    min_count: int = 1

    def __post_init__(self):
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int):
            raise ValueError(f"min_count must be an integer, got {self.min_count!r}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")


#: The tokenizer algorithms whose vocabulary can be cut (``_describe_model``'s names).
TRIMMABLE = ("WordPiece", "byte-level BPE")


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The backend tokenizer's JSON; ValueError naming the class unless it is a WordPiece or byte-level
    BPE fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"vocab_trim needs a fast (tokenizers-backed) WordPiece or byte-level BPE tokenizer; "
                         f"{type(tokenizer).__name__} has no backend tokenizer")
    state = json.loads(backend.to_str())
    kind = _describe_model(state)
    if kind not in TRIMMABLE:
        raise ValueError(f"vocab_trim supports WordPiece and byte-level BPE tokenizers only; "
                         f"{type(tokenizer).__name__} uses a {kind} model (its merges/scores would need rewriting "
                         "too, and a word of new text could lose every piece)")
    return state


def _describe_model(state: dict[str, Any]) -> str:
    """The tokenizer's algorithm as people name it: "byte-level BPE", "Unigram", ..."""
    kind = state["model"].get("type") or "unknown"
    parts = [state.get("pre_tokenizer") or {}]
    parts += parts[0].get("pretokenizers") or []  # a Sequence of pre-tokenizers
    if kind == "BPE" and any(part.get("type") == "ByteLevel" for part in parts):
        return "byte-level BPE"
    return kind


def token_counts(tokenizer: Any, texts: Iterable[str]) -> Counter[int]:
    """How often each token id occurs in ``texts`` (no special tokens added, no truncation)."""
    counts: Counter[int] = Counter()
    for ids in tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]:
        counts.update(ids)
    return counts


def kept_token_ids(tokenizer: Any, model_config: Any, texts: Iterable[str], min_count: int,
                   vocab_size: int, pad_keeps_its_id: bool = False) -> list[int]:
    """Old ids to keep, sorted: tokens used often enough, special/added tokens, ids the config names,
    and with ``pad_keeps_its_id`` every id below the padding id (so its number does not change)."""
    counts = token_counts(tokenizer, texts)
    keep = {token_id for token_id, count in counts.items() if count >= min_count}
    keep.update(tokenizer.all_special_ids)
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    keep.update(token["id"] for token in state.get("added_tokens") or [])
    keep.update(getattr(model_config, name) for name in CONFIG_TOKEN_IDS
                if isinstance(getattr(model_config, name, None), int))
    pad = getattr(model_config, "pad_token_id", None)
    if pad_keeps_its_id and isinstance(pad, int):
        keep.update(range(pad))
    state_model = state["model"]
    if state_model.get("type") == "BPE":
        keep |= bpe_closure(state_model, keep)
    beyond = sorted(i for i in keep if not 0 <= i < vocab_size)
    if beyond:
        raise ValueError(f"token ids {beyond[:5]} are outside the model's embedding matrix ({vocab_size} rows): "
                         "the tokenizer does not belong to this model")
    return sorted(keep)


def _merge_pair(merge: Any) -> tuple[str, str]:
    """A merge as tokenizer.json writes it: "a b" (older) or ["a", "b"]."""
    if isinstance(merge, str):
        left, right = merge.split(" ", 1)
        return left, right
    return merge[0], merge[1]


def bpe_closure(model: dict[str, Any], keep: set[int]) -> set[int]:
    """Ids a byte-level BPE vocabulary must keep besides ``keep`` so that any text still tokenizes,
    and a text made of words the kept tokens spelled tokenizes exactly as before: the 256 byte
    symbols (every text is spelled in them), and both parts of every merge that makes a kept token.

    BPE applies, at each step, the lowest-ranked merge among adjacent pairs. A kept word's merges
    all make tokens of its merge tree, which the closure keeps, with their ranks; the merges that
    go were never applied to it, so each step chooses as before."""
    from tokenizers import pre_tokenizers

    vocab: dict[str, int] = model["vocab"]
    token_of = {i: token for token, i in vocab.items()}
    made_by: dict[str, list[tuple[str, str]]] = {}
    for merge in model.get("merges") or []:
        left, right = _merge_pair(merge)
        made_by.setdefault(left + right, []).append((left, right))
    kept = {token_of[i] for i in keep if i in token_of}
    kept |= {symbol for symbol in pre_tokenizers.ByteLevel.alphabet() if symbol in vocab}
    pending = list(kept)
    while pending:
        for pair in made_by.get(pending.pop(), ()):
            for part in pair:
                if part not in kept and part in vocab:
                    kept.add(part)
                    pending.append(part)
    return {vocab[token] for token in kept} - keep


def _remap_post_processor(processor: dict[str, Any] | None, old_to_new: dict[int, int]) -> None:
    if not processor:
        return
    kind = processor.get("type")
    if kind == "Sequence":
        for inner in processor.get("processors", []):
            _remap_post_processor(inner, old_to_new)
    elif kind == "TemplateProcessing":
        for special in processor.get("special_tokens", {}).values():
            special["ids"] = [old_to_new[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, token_id = processor[key]
            processor[key] = [token, old_to_new[token_id]]


def trimmed_tokenizer(tokenizer: Any, kept: Sequence[int]) -> Any:
    """A tokenizer of the same class whose vocabulary is the tokens at ``kept`` old ids, renumbered 0..n-1.

    Written with ``save_pretrained`` and reloaded with ``from_pretrained``, so the object returned
    is exactly what a saved candidate reloads to.
    """
    state = tokenizer_json(tokenizer)
    old_to_new = {old: new for new, old in enumerate(kept)}
    old_vocab: dict[str, int] = state["model"]["vocab"]
    new_vocab = {token: old_to_new[old] for token, old in old_vocab.items() if old in old_to_new}
    state["model"]["vocab"] = dict(sorted(new_vocab.items(), key=lambda item: item[1]))
    if state["model"].get("type") == "BPE":  # a merge stays when both parts and what it makes stay
        state["model"]["merges"] = [merge for merge in state["model"].get("merges") or []
                                    if all(part in new_vocab for part in (*_merge_pair(merge), "".join(
                                        _merge_pair(merge))))]
    for token in state.get("added_tokens") or []:
        token["id"] = old_to_new[token["id"]]
    _remap_post_processor(state.get("post_processor"), old_to_new)
    if state.get("padding"):
        state["padding"]["pad_id"] = old_to_new[state["padding"]["pad_id"]]
    with tempfile.TemporaryDirectory(prefix="vocab_trim-") as tmp:
        tokenizer.save_pretrained(tmp)
        directory = Path(tmp)
        (directory / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False))
        # Files only some classes and versions write; kept consistent with tokenizer.json.
        vocab_file = directory / "vocab.txt"
        if vocab_file.exists():
            vocab_file.write_text("".join(f"{token}\n" for token in state["model"]["vocab"]), encoding="utf-8")
        if (directory / "vocab.json").exists():
            (directory / "vocab.json").write_text(json.dumps(state["model"]["vocab"], ensure_ascii=False))
        if (directory / "merges.txt").exists():
            (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(
                " ".join(_merge_pair(merge)) + "\n" for merge in state["model"].get("merges") or []),
                encoding="utf-8")
        return type(tokenizer).from_pretrained(tmp, local_files_only=True)


def positions_follow_padding(model: nn.Module, adapter: ArchitectureAdapter) -> bool:
    """Whether the model numbers positions from its padding id (RoBERTa layout: position ids start at
    ``padding_idx + 1``; the embeddings module keeps that ``padding_idx``, BERT's does not)."""
    parent, _, _ = adapter.word_embeddings_path().rpartition(".")
    return isinstance(getattr(get_module(model, parent) if parent else model, "padding_idx", None), int)


def trim_embeddings(model: nn.Module, adapter: ArchitectureAdapter, kept: Sequence[int]) -> nn.Module:
    """Keep the embedding rows at ``kept`` (old ids) and remap the token ids the config names."""
    path = adapter.word_embeddings_path()
    old: nn.Embedding = get_module(model, path)
    index = torch.as_tensor(list(kept), dtype=torch.long, device=old.weight.device)
    old_to_new = {old_id: new_id for new_id, old_id in enumerate(kept)}
    config = model.config
    # A model rebuilt from the config takes its padding index from pad_token_id: match that.
    pad = getattr(config, "pad_token_id", None)
    padding_idx = old_to_new[pad] if isinstance(pad, int) else old_to_new.get(old.padding_idx)
    new = nn.Embedding(len(kept), old.embedding_dim, padding_idx=padding_idx,
                       device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight.detach().index_select(0, index))
    new.weight.requires_grad_(old.weight.requires_grad)
    set_module(model, path, new)
    _trim_output_head(model, old, new, index)
    config.vocab_size = len(kept)
    for name in CONFIG_TOKEN_IDS:
        value = getattr(config, name, None)
        if isinstance(value, int):
            setattr(config, name, old_to_new[value])
    return model


def _trim_output_head(model: nn.Module, old: nn.Embedding, new: nn.Embedding, index: torch.Tensor) -> None:
    """A causal LM's output head over the kept tokens: tied to the new table when it was tied to the old
    one, its own rows at ``index`` otherwise. (The search refuses causal LMs; benchmarks/llm_techniques.py
    trims one to time what a trimmed prompted classifier generates through.)"""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear):
        return
    trimmed = nn.Linear(head.in_features, len(index), bias=head.bias is not None, device=head.weight.device,
                        dtype=head.weight.dtype)
    with torch.no_grad():
        if head.weight is old.weight:
            trimmed.weight = new.weight
        else:
            trimmed.weight.copy_(head.weight.detach().index_select(0, index))
        if head.bias is not None:
            trimmed.bias.copy_(head.bias.detach().index_select(0, index))
    model.set_output_embeddings(trimmed)


@dataclass(frozen=True)
class VocabTrimState:
    #: Ids (in the untrimmed vocabulary) of the kept tokens, in order: new id i is old id kept_ids[i].
    kept_ids: list[int]


class VocabTrim(Technique):
    name = "vocab_trim"
    stage = Stage.STRUCTURE
    Config = VocabTrimConfig
    State = VocabTrimState
    description = ("keep only the token embeddings the training texts use; rewrites the WordPiece or byte-level BPE "
                   "tokenizer")

    @classmethod
    def unsupported_reason_for(cls, model: ModelAndTokenizer) -> str | None:
        # A causal LM's output head scores every token: trimmed, it could never predict a cut one, and
        # distillation over the vocabulary would compare different vocabularies. A prompted
        # classifier (a causal LM's decoder with a label-word head) is trimmed; it generates through
        # its trimmed table tied as the head again (autocompress.prompted.causal_lm_of).
        head = getattr(model.model, "get_output_embeddings", None)
        if callable(head) and head() is not None:
            return ("a causal language model's output head scores every token of its vocabulary; trimming it "
                    "would change what the model can say")
        # The tokenizer decides, whatever the family: a RoBERTa-layout model may come with WordPiece.
        try:
            tokenizer_json(model.tokenizer)
        except ValueError as exc:
            return str(exc)
        return None

    def apply(self, model, config: VocabTrimConfig, context: ApplyContext):
        if context.data is None:
            raise ValueError("vocab_trim needs the task's training texts")
        tokenizer = context.tokenizer
        tokenizer_json(tokenizer)  # fail before any work when the tokenizer cannot be cut
        embeddings = get_module(model, context.adapter.word_embeddings_path())
        kept = kept_token_ids(tokenizer, model.config, context.data.training_texts(), config.min_count,
                              embeddings.num_embeddings, positions_follow_padding(model, context.adapter))
        new_tokenizer = trimmed_tokenizer(tokenizer, kept)
        state = VocabTrimState(kept_ids=list(kept))
        model = self.rebuild(model, config, state, context)
        context.record(state)
        context.tokenizer = new_tokenizer
        old_ids = torch.as_tensor(kept, dtype=torch.long)
        context.token_map = old_ids if context.token_map is None else context.token_map[old_ids]
        return model

    def rebuild(self, model, config: VocabTrimConfig, state: VocabTrimState, context: ApplyContext):
        return trim_embeddings(model, context.adapter, state.kept_ids)


@hookimpl
def autocompress_register_techniques(register):
    register.add(VocabTrim)
