"""Architecture adapters and the model surgery that techniques share.

An adapter names the parts of one model family (embeddings, encoder layers, each layer's
attention q/k/v/output and FFN in/out linears, and for techniques that narrow the hidden width
every part that reads or writes the residual stream) as dotted module paths, so techniques never
hard-code attribute chains. Supporting a new family means registering one adapter through
``autocompress_register_architectures``; no technique changes.

The surgery below is written once for every technique: get/replace a module, slice a linear's
rows/columns (plain or factorised), narrow embeddings and LayerNorms, keep some attention heads,
and build modules at given shapes for ``Technique.rebuild``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from autocompress.errors import InputError

if TYPE_CHECKING:
    from autocompress.registry import Registry


@dataclass(frozen=True)
class LayerPaths:
    """Dotted paths (from the model root) of the parts of one encoder layer."""

    query: str
    key: str
    value: str
    attention_output: str
    ffn_in: str
    ffn_out: str
    #: LayerNorms over the residual stream inside the layer (after attention, after the FFN); None
    #: when the family has none there. Needed only by techniques that narrow the hidden width.
    attention_norm: str | None = None
    output_norm: str | None = None
    #: The gate linear of a gated FFN (Llama's ``gate_proj``: ``down(act(gate(x)) * up(x))``), whose
    #: output rows pair one to one with ``ffn_in``'s; None for a plain two-linear FFN.
    ffn_gate: str | None = None
    #: Linears that project relative positions per head (DeBERTa's ``pos_key_proj`` / ``pos_query_proj``
    #: when it does not share the query/key projections): their output rows follow the heads, like q/k.
    position_projections: tuple[str, ...] = ()
    #: ``query``, ``key`` and ``value`` name one fused linear whose output rows are [q; k; v], three
    #: blocks of equal height (ModernBERT's ``Wqkv``). Added in plugin API 1.5.
    fused_qkv: bool = False
    #: ``ffn_gate`` and ``ffn_in`` name one fused linear whose output rows are [gate; in], two blocks of
    #: equal height that the forward splits (ModernBERT's ``Wi``: ``act(first half) * second half``).
    #: Added in plugin API 1.5.
    fused_ffn: bool = False

    @property
    def ffn_parts(self) -> tuple[str, ...]:
        """Names of the projections that read the layer's input into the FFN width: ``("ffn_in",)``, or
        ``("ffn_gate", "ffn_in")`` when gated (fused or not)."""
        return ("ffn_in",) if self.ffn_gate is None else ("ffn_gate", "ffn_in")

    @property
    def ffn_inputs(self) -> tuple[str, ...]:
        """Every linear that reads the layer's input into the FFN width (``ffn_in``, and ``ffn_gate`` when
        gated), each once: one path when they are fused."""
        return tuple(dict.fromkeys(getattr(self, part) for part in self.ffn_parts))

    @property
    def attention_linears(self) -> tuple[str, ...]:
        """The attention's linears (query, key, value, output), each once: one path for fused q/k/v."""
        return tuple(dict.fromkeys((self.query, self.key, self.value, self.attention_output)))

    def block(self, part: str) -> tuple[int, int] | None:
        """``(index, count)`` when projection ``part`` (``"query"``, ``"key"``, ``"value"``, ``"ffn_gate"``,
        ``"ffn_in"``) is block ``index`` of ``count`` equal blocks of a fused linear's output rows, else None."""
        if self.fused_qkv and part in QKV_PARTS:
            return QKV_PARTS.index(part), len(QKV_PARTS)
        if self.fused_ffn and part in ("ffn_gate", "ffn_in"):
            return ("ffn_gate", "ffn_in").index(part), 2
        return None


#: The attention projections, in the row order of a fused q/k/v linear.
QKV_PARTS = ("query", "key", "value")


@dataclass(frozen=True)
class ResidualStream:
    """Every part outside the encoder layers that reads or writes the residual stream (hidden width).

    Within each layer, q/k/v and the FFN input read the stream, the attention output and FFN output
    write it, and ``LayerPaths.attention_norm`` / ``output_norm`` normalise it.
    """

    #: Config attributes holding the hidden width and the attention head count.
    width_attribute: str
    heads_attribute: str
    #: Embedding tables whose rows are added into the stream (word, position, token type).
    embeddings: tuple[str, ...]
    #: LayerNorms over the stream outside the layers (e.g. after the embeddings).
    norms: tuple[str, ...]
    #: The classification head: a linear reading the final stream into a head-internal width of
    #: the same size (BERT's pooler, DistilBERT's pre_classifier), or None when the output linear
    #: reads the stream itself; and the linear producing the logits.
    head_dense: str | None
    head_output: str


class ArchitectureAdapter(ABC):
    """Names the parts of one model family; see ``BertAdapter`` for an example."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    #: Config attribute holding the FFN width (kept true when every layer has the same width).
    ffn_size_attribute: ClassVar[str] = "intermediate_size"
    #: True for decoder-only (causal) families: a token sees only those before it, so the state that
    #: sums up a sequence is the last real token's, not the first's (``sequence_summary``).
    causal: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model
        self.standardise_modules()

    def standardise_modules(self) -> None:
        """Replace, in place and exactly (same outputs), modules of the family's own types that compute a
        standard one by that standard module (GPT-2's ``Conv1D``, a linear with its weight stored
        transposed, by ``nn.Linear``), so the shared surgery, low-rank, LoRA and int8 meet the types they
        know. Called whenever an adapter is made: for the teacher before the search (so every candidate,
        a copy of it, has them too) and for a reloaded model right after it is built from its
        configuration, before its saved weights (in the standard layout) are loaded. Must do nothing on a
        model already standardised. Nothing by default."""
        return None

    @abstractmethod
    def layer_list_path(self) -> str:
        """Path of the ``nn.ModuleList`` of encoder layers."""

    @abstractmethod
    def layer_paths(self, index: int) -> LayerPaths:
        """Paths of the parts of encoder layer ``index``."""

    @abstractmethod
    def word_embeddings_path(self) -> str:
        """Path of the token embedding ``nn.Embedding``."""

    def head_size(self) -> int:
        """Width of one attention head (unchanged by head pruning): ``hidden_size // num_attention_heads``
        by default; a family whose config names it otherwise overrides this."""
        config = self.model.config
        return config.hidden_size // config.num_attention_heads

    def residual_stream(self) -> ResidualStream | None:
        """The parts outside the layers that read or write the hidden width, or None when this adapter
        does not name them (techniques that narrow the hidden width then refuse the family)."""
        return None

    def shared_head_tables(self) -> tuple[str, ...]:
        """Modules used by every layer whose outputs are per attention head (MPNet's relative attention
        bias): heads removed layer by layer would no longer line up with them, so head pruning refuses
        such a model. Empty by default."""
        return ()

    def pinned_layers(self) -> tuple[int, ...]:
        """Layers that must stay at their position when layers are removed or shared: a layer the family
        builds differently because of where it is (ModernBERT's first layer has no attention norm: the
        embeddings' norm serves), which no other layer can stand in for, nor it for another. Empty by
        default. Added in plugin API 1.5."""
        return ()

    def key_value_heads(self) -> int | None:
        """Key/value heads per layer under grouped-query attention (each shared by a group of query
        heads), or None when every query head has its own key and value."""
        return None

    def sequence_summary(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The state that sums up each sequence of ``hidden`` (batch, length, width): the first token's
        ([CLS]) for encoders, the last real token's (``attention_mask`` 1) for causal families."""
        if not self.causal:
            return hidden[:, 0]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (positions * attention_mask.to(hidden.device).long()).argmax(dim=-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def num_layers(self) -> int:
        return len(get_module(self.model, self.layer_list_path()))

    def all_layer_paths(self) -> list[LayerPaths]:
        return [self.layer_paths(i) for i in range(self.num_layers())]

    def linear(self, path: str) -> nn.Linear:
        module = get_module(self.model, path)
        if not isinstance(module, nn.Linear):
            raise TypeError(f"{path} is a {type(module).__name__}, not nn.Linear")
        return module


class BertAdapter(ArchitectureAdapter):
    """BERT and the families that share its module layout (RoBERTa, MiniLM, ELECTRA)."""

    name = "bert"
    description = "BERT-layout encoders: BERT, MiniLM, RoBERTa, ELECTRA, XLM-R"
    model_types = ("bert", "roberta", "electra", "xlm-roberta")

    def _prefix(self) -> str:
        return self.model.base_model_prefix

    def layer_list_path(self) -> str:
        return f"{self._prefix()}.encoder.layer"

    def layer_paths(self, index: int) -> LayerPaths:
        layer = f"{self.layer_list_path()}.{index}"
        return LayerPaths(
            query=f"{layer}.attention.self.query",
            key=f"{layer}.attention.self.key",
            value=f"{layer}.attention.self.value",
            attention_output=f"{layer}.attention.output.dense",
            ffn_in=f"{layer}.intermediate.dense",
            ffn_out=f"{layer}.output.dense",
            attention_norm=f"{layer}.attention.output.LayerNorm",
            output_norm=f"{layer}.output.LayerNorm",
        )

    def word_embeddings_path(self) -> str:
        return f"{self._prefix()}.embeddings.word_embeddings"

    def residual_stream(self) -> ResidualStream | None:
        prefix, model = self._prefix(), self.model
        embeddings = get_module(model, f"{prefix}.embeddings")
        if hasattr(embeddings, "embeddings_project") or hasattr(get_module(model, prefix), "embeddings_project"):
            return None  # ELECTRA-style: the embeddings have their own width, projected into the stream
        tables = tuple(f"{prefix}.embeddings.{name}" for name in
                       ("word_embeddings", "position_embeddings", "token_type_embeddings")
                       if isinstance(getattr(embeddings, name, None), nn.Module))
        if getattr(get_module(model, prefix), "pooler", None) is not None and \
                isinstance(getattr(model, "classifier", None), nn.Linear):
            head_dense, head_output = f"{prefix}.pooler.dense", "classifier"
        elif hasattr(getattr(model, "classifier", None), "out_proj"):  # RoBERTa/ELECTRA classification head
            head_dense, head_output = "classifier.dense", "classifier.out_proj"
        elif getattr(get_module(model, prefix), "pooler", None) is None and \
                isinstance(getattr(model, "classifier", None), nn.Linear):  # a token classifier: tags from each state
            head_dense, head_output = None, "classifier"
        else:
            return None
        return ResidualStream("hidden_size", "num_attention_heads", tables, (f"{prefix}.embeddings.LayerNorm",),
                              head_dense, head_output)


class DistilBertAdapter(ArchitectureAdapter):
    name = "distilbert"
    description = "DistilBERT encoders"
    model_types = ("distilbert",)
    ffn_size_attribute = "hidden_dim"

    def layer_list_path(self) -> str:
        return "distilbert.transformer.layer"

    def layer_paths(self, index: int) -> LayerPaths:
        layer = f"{self.layer_list_path()}.{index}"
        return LayerPaths(
            query=f"{layer}.attention.q_lin",
            key=f"{layer}.attention.k_lin",
            value=f"{layer}.attention.v_lin",
            attention_output=f"{layer}.attention.out_lin",
            ffn_in=f"{layer}.ffn.lin1",
            ffn_out=f"{layer}.ffn.lin2",
            attention_norm=f"{layer}.sa_layer_norm",
            output_norm=f"{layer}.output_layer_norm",
        )

    def word_embeddings_path(self) -> str:
        return "distilbert.embeddings.word_embeddings"

    def residual_stream(self) -> ResidualStream | None:
        if getattr(self.model.config, "sinusoidal_pos_embds", False):
            return None  # fixed sinusoidal positions are a function of the width, not a table to slice
        if isinstance(getattr(self.model, "pre_classifier", None), nn.Linear):
            head_dense = "pre_classifier"
        elif isinstance(getattr(self.model, "classifier", None), nn.Linear):
            head_dense = None  # a token classifier: the classifier reads each token's state
        else:
            return None
        return ResidualStream("dim", "n_heads", ("distilbert.embeddings.word_embeddings",
                                                 "distilbert.embeddings.position_embeddings"),
                              ("distilbert.embeddings.LayerNorm",), head_dense, "classifier")

    def head_size(self) -> int:
        config = self.model.config
        return config.dim // config.n_heads


class DebertaV2Adapter(ArchitectureAdapter):
    """DeBERTa-v2 and v3 encoders (disentangled attention). The relative-position projections follow the
    heads: with ``share_att_key`` (v3) they are the query/key projections themselves, so cutting heads
    cuts both; without it, ``pos_key_proj`` / ``pos_query_proj`` are named in ``position_projections``
    and sliced with the same heads. The attention's ``num_attention_heads`` (which reshapes the scores)
    is kept true by ``keep_heads``."""

    name = "deberta-v2"
    description = "DeBERTa-v2/v3 encoders (disentangled attention)"
    model_types = ("deberta-v2",)

    def layer_list_path(self) -> str:
        return f"{self.model.base_model_prefix}.encoder.layer"

    def layer_paths(self, index: int) -> LayerPaths:
        layer = f"{self.layer_list_path()}.{index}"
        attention = get_module(self.model, f"{layer}.attention.self")
        positions = tuple(f"{layer}.attention.self.{name}" for name in ("pos_key_proj", "pos_query_proj")
                          if isinstance(getattr(attention, name, None), nn.Module))
        return LayerPaths(
            query=f"{layer}.attention.self.query_proj",
            key=f"{layer}.attention.self.key_proj",
            value=f"{layer}.attention.self.value_proj",
            attention_output=f"{layer}.attention.output.dense",
            ffn_in=f"{layer}.intermediate.dense",
            ffn_out=f"{layer}.output.dense",
            attention_norm=f"{layer}.attention.output.LayerNorm",
            output_norm=f"{layer}.output.LayerNorm",
            position_projections=positions,
        )

    def word_embeddings_path(self) -> str:
        return f"{self.model.base_model_prefix}.embeddings.word_embeddings"

    def head_size(self) -> int:
        config = self.model.config
        return getattr(config, "attention_head_size", None) or config.hidden_size // config.num_attention_heads


class MPNetAdapter(ArchitectureAdapter):
    """MPNet encoders (e.g. all-mpnet-base-v2): BERT-like layers under ``attention.attn`` (q/k/v/o), and one
    relative-attention bias table per head shared by every layer (``shared_head_tables``)."""

    name = "mpnet"
    description = "MPNet encoders"
    model_types = ("mpnet",)

    def layer_list_path(self) -> str:
        return f"{self.model.base_model_prefix}.encoder.layer"

    def layer_paths(self, index: int) -> LayerPaths:
        layer = f"{self.layer_list_path()}.{index}"
        return LayerPaths(
            query=f"{layer}.attention.attn.q",
            key=f"{layer}.attention.attn.k",
            value=f"{layer}.attention.attn.v",
            attention_output=f"{layer}.attention.attn.o",
            ffn_in=f"{layer}.intermediate.dense",
            ffn_out=f"{layer}.output.dense",
            attention_norm=f"{layer}.attention.LayerNorm",
            output_norm=f"{layer}.output.LayerNorm",
        )

    def word_embeddings_path(self) -> str:
        return f"{self.model.base_model_prefix}.embeddings.word_embeddings"

    def shared_head_tables(self) -> tuple[str, ...]:
        encoder = get_module(self.model, f"{self.model.base_model_prefix}.encoder")
        if isinstance(getattr(encoder, "relative_attention_bias", None), nn.Module):
            return (f"{self.model.base_model_prefix}.encoder.relative_attention_bias",)
        return ()


class ModernBertAdapter(ArchitectureAdapter):
    """ModernBERT encoders: pre-norm layers with one fused q/k/v linear (``Wqkv``, rows [q; k; v]), a gated
    MLP whose input linear is fused too (``Wi``, rows [gate; in]), rotary positions, and global or local
    (sliding-window) attention by layer (``config.layer_types``, kept true by layer dropping). The first
    layer has no attention norm, so it is pinned (``pinned_layers``)."""

    name = "modernbert"
    description = "ModernBERT encoders (fused q/k/v, gated MLP, global/local attention)"
    model_types = ("modernbert",)

    def layer_list_path(self) -> str:
        return f"{self.model.base_model_prefix}.layers"

    def layer_paths(self, index: int) -> LayerPaths:
        layer = f"{self.layer_list_path()}.{index}"
        return LayerPaths(
            query=f"{layer}.attn.Wqkv",
            key=f"{layer}.attn.Wqkv",
            value=f"{layer}.attn.Wqkv",
            attention_output=f"{layer}.attn.Wo",
            ffn_in=f"{layer}.mlp.Wi",
            ffn_gate=f"{layer}.mlp.Wi",
            ffn_out=f"{layer}.mlp.Wo",
            fused_qkv=True,
            fused_ffn=True,
        )

    def word_embeddings_path(self) -> str:
        return f"{self.model.base_model_prefix}.embeddings.tok_embeddings"

    def pinned_layers(self) -> tuple[int, ...]:
        return (0,)

    def sequence_summary(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if getattr(self.model.config, "classifier_pooling", "cls") != "mean":
            return hidden[:, 0]
        mask = attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)  # the classifier's own pooling
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


class LlamaAdapter(ArchitectureAdapter):
    """Llama-layout decoders (pre-norm RMSNorm blocks, rotary positions, grouped-query attention, gated
    MLP): Llama, SmolLM2, Qwen2, Qwen3 and Mistral, as sequence classifiers (``*ForSequenceClassification``,
    which reads the last real token; see ``autocompress.prompted`` for a causal LM made into one)."""

    name = "llama"
    description = "Llama-layout decoders: Llama, SmolLM2, Qwen2, Qwen3, Mistral"
    model_types = ("llama", "qwen2", "qwen3", "mistral")
    causal = True

    def _prefix(self) -> str:
        return self.model.base_model_prefix

    def layer_list_path(self) -> str:
        return f"{self._prefix()}.layers"

    def layer_paths(self, index: int) -> LayerPaths:
        layer = f"{self.layer_list_path()}.{index}"
        return LayerPaths(
            query=f"{layer}.self_attn.q_proj",
            key=f"{layer}.self_attn.k_proj",
            value=f"{layer}.self_attn.v_proj",
            attention_output=f"{layer}.self_attn.o_proj",
            ffn_in=f"{layer}.mlp.up_proj",
            ffn_out=f"{layer}.mlp.down_proj",
            ffn_gate=f"{layer}.mlp.gate_proj",
        )

    def word_embeddings_path(self) -> str:
        return f"{self._prefix()}.embed_tokens"

    def head_size(self) -> int:
        config = self.model.config
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def key_value_heads(self) -> int | None:
        config = self.model.config
        kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return kv if kv != config.num_attention_heads else None


class GPT2Adapter(ArchitectureAdapter):
    """GPT-2 decoders: pre-norm LayerNorm blocks, learned positions (``wpe``), multi-head attention with one
    fused q/k/v projection (``c_attn``, rows [q; k; v] once standardised) and a two-linear MLP. Its
    projections are transformers' ``Conv1D`` (a linear with a transposed weight); ``standardise_modules``
    makes them ``nn.Linear``. The attention's ``num_heads`` and ``split_size`` (the width ``c_attn``'s
    output is split at) are kept true by ``keep_heads``. As a sequence classifier
    (``GPT2ForSequenceClassification``) it reads the last real token."""

    name = "gpt2"
    description = "GPT-2 decoders"
    model_types = ("gpt2",)
    ffn_size_attribute = "n_inner"
    causal = True

    def standardise_modules(self) -> None:
        conv1d_to_linear(self.model)

    def _prefix(self) -> str:
        return self.model.base_model_prefix

    def layer_list_path(self) -> str:
        return f"{self._prefix()}.h"

    def layer_paths(self, index: int) -> LayerPaths:
        layer = f"{self.layer_list_path()}.{index}"
        return LayerPaths(
            query=f"{layer}.attn.c_attn",
            key=f"{layer}.attn.c_attn",
            value=f"{layer}.attn.c_attn",
            attention_output=f"{layer}.attn.c_proj",
            ffn_in=f"{layer}.mlp.c_fc",
            ffn_out=f"{layer}.mlp.c_proj",
            fused_qkv=True,
        )

    def word_embeddings_path(self) -> str:
        return f"{self._prefix()}.wte"


def adapter_class_for(model_type: str | None, registry: Registry) -> type[ArchitectureAdapter]:
    """The registered adapter class whose ``model_types`` include ``model_type``; InputError naming every
    supported family otherwise."""
    for entry in registry:
        if model_type in entry.cls.model_types:
            return entry.cls
    families = "; ".join(f"{getattr(entry.cls, 'description', entry.name)} ({', '.join(entry.cls.model_types)})"
                         for entry in registry)
    raise InputError(
        f"no architecture adapter for model_type '{model_type}'; supported families: {families}. "
        "A plugin can add one through autocompress_register_architectures"
    )


def adapter_for(model: nn.Module, registry: Registry) -> ArchitectureAdapter:
    """The registered adapter whose ``model_types`` include the model's ``config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return adapter_class_for(model_type, registry)(model)


def get_module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, module)


def slice_linear(
    linear: nn.Linear, keep_out: Sequence[int] | torch.Tensor | None = None,
    keep_in: Sequence[int] | torch.Tensor | None = None,
) -> nn.Linear:
    """A new, physically smaller ``nn.Linear`` keeping the given output rows / input columns."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if keep_out is not None:
        index = torch.as_tensor(keep_out, dtype=torch.long)
        weight = weight.index_select(0, index)
        bias = bias.index_select(0, index) if bias is not None else None
    if keep_in is not None:
        weight = weight.index_select(1, torch.as_tensor(keep_in, dtype=torch.long))
    sliced = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                       device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        sliced.weight.copy_(weight)
        if bias is not None:
            sliced.bias.copy_(bias)
    return sliced


def linear_from_conv1d(conv: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` computing what transformers' ``Conv1D`` ``conv`` computes (``x @ W + b`` with ``W``
    stored as (in, out)): its weight transposed, its bias, in its dtype and device."""
    weight = conv.weight.detach()
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=conv.bias is not None, device=weight.device,
                       dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        if conv.bias is not None:
            linear.bias.copy_(conv.bias.detach())
    linear.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        linear.bias.requires_grad_(conv.bias.requires_grad)
    return linear


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace every transformers ``Conv1D`` in ``model`` by its ``linear_from_conv1d``, in place; returns how
    many were replaced (0 when there were none left)."""
    from transformers.pytorch_utils import Conv1D

    found = [(path, module) for path, module in model.named_modules() if isinstance(module, Conv1D)]
    for path, module in found:
        set_module(model, path, linear_from_conv1d(module))
    return len(found)


class FactorizedEmbedding(nn.Sequential):
    """A token embedding stored as two factors: ``Embedding(V, r)`` then ``Linear(r, H, bias=False)``.

    It answers ``num_embeddings``, ``embedding_dim`` and ``padding_idx`` like the ``nn.Embedding``
    it replaces, so code reading them off ``get_input_embeddings()`` works unchanged. Its weights
    are saved as ``path.0.weight`` and ``path.1.weight``; the technique that made it rebuilds it
    on reload (``Technique.rebuild``).
    """

    def __init__(self, embedding: nn.Embedding, projection: nn.Linear):
        if projection.in_features != embedding.embedding_dim or projection.bias is not None:
            raise ValueError("the projection must be Linear(embedding.embedding_dim, hidden, bias=False)")
        super().__init__(embedding, projection)

    @property
    def num_embeddings(self) -> int:
        return self[0].num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self[1].out_features

    @property
    def padding_idx(self) -> int | None:
        return self[0].padding_idx

    @property
    def rank(self) -> int:
        return self[0].embedding_dim


#: Attention-module attributes holding the head count / total head width, across families.
HEAD_COUNT_ATTRIBUTES = ("num_attention_heads", "n_heads", "num_heads")
HEAD_WIDTH_ATTRIBUTES = ("all_head_size", "split_size")


def _index(keep: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(keep, dtype=torch.long, device=device)


def slice_module(module: nn.Module, keep_out: Sequence[int] | torch.Tensor | None = None,
                 keep_in: Sequence[int] | torch.Tensor | None = None) -> nn.Module:
    """A new, physically smaller copy of ``module`` keeping output features ``keep_out`` and input
    features ``keep_in`` (None: all), whatever form the module has taken:

    - ``nn.Linear``: rows / columns of the weight (``slice_linear``);
    - a factorised linear (``nn.Sequential`` of linears, e.g. low-rank): input columns of the first,
      output rows of the last;
    - ``nn.Embedding``: embedding columns (``keep_out``);
    - ``FactorizedEmbedding``: the projection's rows (``keep_out``);
    - ``nn.LayerNorm``: its elements (``keep_out``), weight and bias alike.
    """
    if isinstance(module, nn.Linear):
        return slice_linear(module, keep_out=keep_out, keep_in=keep_in)
    if isinstance(module, FactorizedEmbedding):
        if keep_in is not None:
            raise TypeError("a factorised embedding has no input features to slice")
        return FactorizedEmbedding(module[0], slice_linear(module[1], keep_out=keep_out))
    if isinstance(module, nn.Sequential) and len(module) and all(isinstance(m, nn.Linear) for m in module):
        parts = list(module)
        if keep_in is not None:
            parts[0] = slice_linear(parts[0], keep_in=keep_in)
        if keep_out is not None:
            parts[-1] = slice_linear(parts[-1], keep_out=keep_out)
        return nn.Sequential(*parts)
    if isinstance(module, nn.Embedding):
        if keep_in is not None:
            raise TypeError("slice an embedding's rows (token ids) with its own technique, not slice_module")
        weight = module.weight.detach()
        if keep_out is not None:
            weight = weight.index_select(1, _index(keep_out, weight.device))
        table = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=module.padding_idx,
                             device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            table.weight.copy_(weight)
        table.weight.requires_grad_(module.weight.requires_grad)
        return table
    if isinstance(module, nn.LayerNorm):
        if keep_in is not None or len(module.normalized_shape) != 1:
            raise TypeError("a LayerNorm is sliced over its one normalised dimension (keep_out)")
        keep = _index(keep_out if keep_out is not None else range(module.normalized_shape[0]),
                      module.weight.device if module.weight is not None else torch.device("cpu"))
        norm = nn.LayerNorm(len(keep), eps=module.eps, elementwise_affine=module.elementwise_affine,
                            bias=module.bias is not None, device=keep.device,
                            dtype=module.weight.dtype if module.weight is not None else None)
        with torch.no_grad():
            if module.weight is not None:
                norm.weight.copy_(module.weight.detach().index_select(0, keep))
            if module.bias is not None:
                norm.bias.copy_(module.bias.detach().index_select(0, keep))
        return norm
    raise TypeError(f"slice_module does not know how to slice a {type(module).__name__}")


def replace_sliced(model: nn.Module, path: str, keep_out: Sequence[int] | torch.Tensor | None = None,
                   keep_in: Sequence[int] | torch.Tensor | None = None) -> nn.Module:
    """Replace the module at ``path`` by ``slice_module(module, keep_out, keep_in)``; returns the new module."""
    new = slice_module(get_module(model, path), keep_out=keep_out, keep_in=keep_in)
    set_module(model, path, new)
    return new


def projection_weight(model: nn.Module, paths: LayerPaths, part: str) -> torch.Tensor:
    """The weight rows of projection ``part`` of one layer (``"query"``, ``"key"``, ``"value"``,
    ``"ffn_gate"``, ``"ffn_in"``): the whole linear's weight, or its block of a fused linear."""
    module = get_module(model, getattr(paths, part))
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{getattr(paths, part)} is a {type(module).__name__}, not nn.Linear")
    block = paths.block(part)
    if block is None:
        return module.weight
    index, count = block
    height = module.out_features // count
    return module.weight[index * height:(index + 1) * height]


def projection_width(model: nn.Module, paths: LayerPaths, part: str) -> int:
    """Output rows of projection ``part`` (its block's height when fused)."""
    block = paths.block(part)
    width = out_features(get_module(model, getattr(paths, part)))
    return width if block is None else width // block[1]


def keep_projection_rows(model: nn.Module, paths: LayerPaths,
                         keep: dict[str, Sequence[int] | torch.Tensor]) -> None:
    """Keep output rows ``keep[part]`` of each named projection of one layer. The blocks of a fused
    linear are sliced together (each keeps its own rows), so every block of it must be named."""
    fused: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
    for part, rows in keep.items():
        path, block = getattr(paths, part), paths.block(part)
        if block is None:
            replace_sliced(model, path, keep_out=rows)
        else:
            fused.setdefault(path, []).append((*block, torch.as_tensor(rows, dtype=torch.long)))
    for path, blocks in fused.items():
        count = blocks[0][1]
        if sorted(index for index, _, _ in blocks) != list(range(count)):
            raise ValueError(f"{path} is a fused linear of {count} blocks: slice all of them at once")
        height = out_features(get_module(model, path)) // count
        rows = torch.cat([rows + index * height for index, _, rows in sorted(blocks, key=lambda b: b[0])])
        replace_sliced(model, path, keep_out=rows)


def keep_ffn_neurons(model: nn.Module, paths: LayerPaths, neurons: Sequence[int] | torch.Tensor) -> None:
    """Keep only FFN neurons ``neurons`` of one layer: the rows of every FFN input projection (gate and
    in, fused or not) and the FFN output's columns."""
    keep_projection_rows(model, paths, {part: neurons for part in paths.ffn_parts})
    replace_sliced(model, paths.ffn_out, keep_in=neurons)


def keep_heads(model: nn.Module, paths: LayerPaths, keep: Sequence[int], head_size: int,
               key_value_keep: Sequence[int] | None = None) -> None:
    """Keep only the attention heads ``keep`` of one layer: q/k/v output rows and attention-output columns.

    Under grouped-query attention ``key_value_keep`` names the key/value heads kept (k/v rows), and
    ``keep`` the query heads (q rows, attention-output columns); None: k/v keep the heads ``keep``.
    Transformers 5 attention infers the head count from the q/k/v width; the attention module's
    head-count attributes are updated too so nothing stale remains.
    """
    def rows(heads: Sequence[int]) -> torch.Tensor:
        # Head i owns rows i*head_size ... (i+1)*head_size - 1 (and those attention-output columns).
        return torch.tensor([u for head in heads for u in range(head * head_size, (head + 1) * head_size)],
                            dtype=torch.long)

    units = rows(keep)
    key_value_units = units if key_value_keep is None else rows(key_value_keep)
    keep_projection_rows(model, paths, {"query": units, "key": key_value_units, "value": key_value_units})
    for path in paths.position_projections:
        replace_sliced(model, path, keep_out=units)
    replace_sliced(model, paths.attention_output, keep_in=units)
    attention = get_module(model, paths.query.rpartition(".")[0])
    for name in HEAD_COUNT_ATTRIBUTES:
        if isinstance(getattr(attention, name, None), int):
            setattr(attention, name, len(keep))
    for name in HEAD_WIDTH_ATTRIBUTES:
        if isinstance(getattr(attention, name, None), int):
            setattr(attention, name, len(keep) * head_size)


def head_count(model: nn.Module, paths: LayerPaths, head_size: int) -> int:
    """Attention heads layer ``paths`` has now (its attention output's input width / head size)."""
    return in_features(get_module(model, paths.attention_output)) // head_size


def in_features(module: nn.Module) -> int:
    """Input width of a linear, plain or factorised."""
    first = module[0] if isinstance(module, nn.Sequential) else module
    return first.in_features


def out_features(module: nn.Module) -> int:
    """Output width of a linear, plain or factorised."""
    last = module[-1] if isinstance(module, nn.Sequential) else module
    return last.out_features


def factorised_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """``Sequential(Linear(in, rank, bias=False), Linear(rank, out, bias=linear has one))`` in
    ``linear``'s dtype and device, weights not set: the shape of a low-rank factorisation."""
    weight = linear.weight
    return nn.Sequential(
        nn.Linear(linear.in_features, rank, bias=False, device=weight.device, dtype=weight.dtype),
        nn.Linear(rank, linear.out_features, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype),
    )


def match_saved_shapes(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Deprecated (removed with plugin API 2.0): give modules the shapes their saved tensors have.

    The rule autocompress used before techniques rebuilt their own structure, kept for techniques
    written for plugin API <= 1.2 (and format-1 directories): a linear saved at another shape is
    rebuilt at that shape; a linear saved as ``path.0.weight`` + ``path.1.weight`` becomes a
    ``Sequential`` of two linears; an embedding saved that way a ``FactorizedEmbedding``; an
    embedding saved at another shape an embedding of that shape. Returns whether anything changed.
    """
    def linear(prefix: str, like: nn.Module) -> nn.Linear:
        out, inp = shapes[f"{prefix}.weight"]
        return nn.Linear(inp, out, bias=f"{prefix}.bias" in shapes, dtype=like.weight.dtype)

    changed = False
    for path, module in list(model.named_modules()):
        factors = f"{path}.weight" not in shapes and f"{path}.0.weight" in shapes and f"{path}.1.weight" in shapes
        if isinstance(module, nn.Linear):
            if factors:
                set_module(model, path, nn.Sequential(linear(f"{path}.0", module), linear(f"{path}.1", module)))
            elif f"{path}.weight" in shapes and tuple(shapes[f"{path}.weight"]) != tuple(module.weight.shape):
                set_module(model, path, linear(path, module))
            else:
                continue
            changed = True
        elif isinstance(module, nn.Embedding):
            if factors:
                vocabulary, rank = shapes[f"{path}.0.weight"]
                table = nn.Embedding(vocabulary, rank, padding_idx=module.padding_idx, dtype=module.weight.dtype)
                set_module(model, path, FactorizedEmbedding(table, linear(f"{path}.1", module)))
            elif f"{path}.weight" in shapes and tuple(shapes[f"{path}.weight"]) != tuple(module.weight.shape):
                rows, width = shapes[f"{path}.weight"]
                padding = module.padding_idx if module.padding_idx is not None and module.padding_idx < rows else None
                set_module(model, path, nn.Embedding(rows, width, padding_idx=padding, dtype=module.weight.dtype))
            else:
                continue
            changed = True
    return changed
