"""Architecture adapters and the model surgery that techniques share.

An adapter names the parts of one model family (embeddings, encoder layers, each layer's
attention q/k/v/output and FFN in/out linears) as dotted module paths, so techniques never
hard-code attribute chains. Supporting a new family means registering one adapter through
``autocompress_register_architectures``; no technique changes.
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


class ArchitectureAdapter(ABC):
    """Names the parts of one model family; see ``BertAdapter`` for an example."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    #: Config attribute holding the FFN width (kept true when every layer has the same width).
    ffn_size_attribute: ClassVar[str] = "intermediate_size"

    def __init__(self, model: nn.Module):
        self.model = model

    @abstractmethod
    def layer_list_path(self) -> str:
        """Path of the ``nn.ModuleList`` of encoder layers."""

    @abstractmethod
    def layer_paths(self, index: int) -> LayerPaths:
        """Paths of the parts of encoder layer ``index``."""

    @abstractmethod
    def word_embeddings_path(self) -> str:
        """Path of the token embedding ``nn.Embedding``."""

    @abstractmethod
    def head_size(self) -> int:
        """Width of one attention head (unchanged by head pruning)."""

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
        )

    def word_embeddings_path(self) -> str:
        return f"{self._prefix()}.embeddings.word_embeddings"

    def head_size(self) -> int:
        config = self.model.config
        return config.hidden_size // config.num_attention_heads


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
        )

    def word_embeddings_path(self) -> str:
        return "distilbert.embeddings.word_embeddings"

    def head_size(self) -> int:
        config = self.model.config
        return config.dim // config.n_heads


def adapter_for(model: nn.Module, registry: Registry) -> ArchitectureAdapter:
    """The registered adapter whose ``model_types`` include the model's ``config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for entry in registry:
        if model_type in entry.cls.model_types:
            return entry.cls(model)
    supported = sorted(t for entry in registry for t in entry.cls.model_types)
    raise InputError(
        f"no architecture adapter for model_type '{model_type}' (supported: {', '.join(supported)}); "
        "a plugin can add one through autocompress_register_architectures"
    )


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


class FactorizedEmbedding(nn.Sequential):
    """A token embedding stored as two factors: ``Embedding(V, r)`` then ``Linear(r, H, bias=False)``.

    It answers ``num_embeddings``, ``embedding_dim`` and ``padding_idx`` like the ``nn.Embedding``
    it replaces, so code reading them off ``get_input_embeddings()`` works unchanged. Its weights
    are saved as ``path.0.weight`` and ``path.1.weight``; ``autocompress.model_io`` rebuilds it
    from those shapes on reload, whichever plugin made it.
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
