"""Width pruning: narrow the residual stream (hidden width) of the whole model.

The source documents' own student is a BERT of hidden width 512 with 8 heads instead of 768 with
12. This technique gets there from the teacher: it keeps ``width`` of the ``H`` channels of the
residual stream, physically, everywhere the stream is read or written: the word, position and
token-type embedding tables (columns), the LayerNorms over the stream (after the embeddings and
inside every layer), every layer's q/k/v and FFN input (columns) and attention output and FFN
output (rows), and the classification head's input (BERT's pooler, DistilBERT's pre_classifier,
RoBERTa's classifier.dense; their own output width narrows to ``width`` too, and the output
linear's columns with it).

Heads: the head size stays and a layer keeps at most ``width / head_size`` heads, its most
important ones. So the attention's inner width shrinks with the stream, and the configuration's
``hidden_size`` / ``num_attention_heads`` (DistilBERT: ``dim`` / ``n_heads``) describe the result
exactly: plain transformers reloads a model that only this technique changed. Keeping the head
size is what the weights were trained with (the attention scores are scaled by
``1/sqrt(head_size)``, and shrinking heads would change every score), and fewer heads also shrink
the q/k/v/output products and the attention itself, which is faster than keeping every head at
the full inner width. Transformers' BERT/DistilBERT attention infer the head count from the q/k/v
width, so layers may keep different counts (after head pruning); the width is rounded to whole
heads: ``width = max(1, round(width_fraction * H / head_size)) * head_size``.

Importance, over ``samples`` training texts: a stream channel scores the mean magnitude of its
activation over real tokens at every point of the stream (embedding output and every layer's
output); a head the mean L2 norm of its contribution to its attention output; a head-internal
channel (pooler output) the mean magnitude of its activation times the L2 norm of the output
weights reading it. Without task data the scores come from weights alone (L2 norms of the weights
reading and writing each channel; a head's L1 norm), with a warning saying so.

LayerNorm normalises over the kept channels only, so the outputs move even for the kept channels:
recover with distillation, whose hidden-state loss maps the narrower student states to the
teacher's width through a learned projection. The state is the kept width and each layer's kept
head count; ``rebuild`` narrows a model built from the original configuration to those shapes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.arch import (
    ArchitectureAdapter,
    LayerPaths,
    ResidualStream,
    get_module,
    head_count,
    keep_heads,
    replace_sliced,
)
from autocompress.technique import ApplyContext, Stage, Technique

#: Examples per forward pass while scoring.
SCORING_BATCH = 32


@dataclass(frozen=True)
class WidthPruningConfig:
    #: Fraction of the hidden width kept, rounded to whole attention heads.
    width_fraction: float = 0.75
    #: Training texts whose activations score channels and heads.
    samples: int = 64

    def __post_init__(self):
        if isinstance(self.width_fraction, bool) or not isinstance(self.width_fraction, (int, float)):
            raise ValueError(f"width_fraction must be a number, got {self.width_fraction!r}")
        if not 0.0 < self.width_fraction <= 1.0:
            raise ValueError(f"width_fraction must be in (0, 1], got {self.width_fraction}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {self.samples!r}")


@dataclass(frozen=True)
class WidthPruningState:
    #: Kept hidden width (a multiple of the head size).
    width: int
    #: Per layer position, the number of attention heads kept.
    heads: list[int]


@dataclass
class Importance:
    """Scores deciding what is kept: stream channels, each layer's heads, the head-internal channels."""

    channels: torch.Tensor
    heads: list[torch.Tensor]
    head_channels: torch.Tensor | None


def kept_width(hidden: int, head_size: int, fraction: float) -> int:
    return max(1, round(fraction * hidden / head_size)) * head_size


def _unique_layers(model: nn.Module, adapter: ArchitectureAdapter) -> list[tuple[int, LayerPaths]]:
    """(position, paths) of each distinct layer module: a shared layer is narrowed once."""
    seen, unique = set(), []
    layers = get_module(model, adapter.layer_list_path())
    for position, layer in enumerate(layers):
        if id(layer) not in seen:
            seen.add(id(layer))
            unique.append((position, adapter.layer_paths(position)))
    return unique


def narrow(model: nn.Module, adapter: ArchitectureAdapter, channels: torch.Tensor, heads: list[list[int]],
           head_channels: torch.Tensor) -> nn.Module:
    """Keep stream ``channels`` everywhere, ``heads[i]`` of layer ``i``, ``head_channels`` of the head."""
    stream = adapter.residual_stream()
    head_size = adapter.head_size()
    for path in stream.embeddings + stream.norms:
        replace_sliced(model, path, keep_out=channels)
    for position, paths in _unique_layers(model, adapter):
        if len(heads[position]) != head_count(model, paths, head_size):
            keep_heads(model, paths, heads[position], head_size)
        for path in (paths.query, paths.key, paths.value, paths.ffn_in):
            replace_sliced(model, path, keep_in=channels)
        for path in (paths.attention_output, paths.ffn_out, paths.attention_norm, paths.output_norm):
            replace_sliced(model, path, keep_out=channels)
    if stream.head_dense is not None:
        replace_sliced(model, stream.head_dense, keep_in=channels, keep_out=head_channels)
        replace_sliced(model, stream.head_output, keep_in=head_channels)
    else:
        replace_sliced(model, stream.head_output, keep_in=channels)
    width = len(channels)
    setattr(model.config, stream.width_attribute, width)
    setattr(model.config, stream.heads_attribute, width // head_size)
    return model


def _sample_batches(context: ApplyContext, samples: int) -> list[dict[str, torch.Tensor]]:
    from autocompress.training import sample_batches

    return sample_batches(context.tokenizer, context.data.train, samples, context.seed, context.max_length,
                          SCORING_BATCH)


def activation_importance(model: nn.Module, adapter: ArchitectureAdapter, stream: ResidualStream,
                          batches: list[dict[str, torch.Tensor]]) -> Importance:
    """Scores from activations on ``batches`` (see the module docstring)."""
    head_size = adapter.head_size()
    layer_paths = adapter.all_layer_paths()
    head_sums = [torch.zeros(head_count(model, p, head_size), dtype=torch.float64) for p in layer_paths]
    mask: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []

    def head_hook(layer: int):
        def hook(module, args):
            context = args[0]
            real = mask[0].bool()
            split = context.view(*context.shape[:-1], -1, head_size)
            for head in range(split.shape[-2]):
                alone = torch.zeros_like(split)
                alone[..., head, :] = split[..., head, :]
                contribution = _without_bias(module, alone.view(context.shape))
                head_sums[layer][head] += contribution[real].float().norm(dim=-1).sum().double()
        return hook

    def pooled_hook(module, args, output):
        pooled.append(output.detach().float().abs())

    handles = [get_module(model, p.attention_output).register_forward_pre_hook(head_hook(i))
               for i, p in enumerate(layer_paths)]
    if stream.head_dense is not None:
        handles.append(get_module(model, stream.head_dense).register_forward_hook(pooled_hook))
    channel_sum, tokens = None, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for inputs in batches:
                mask[:] = [inputs["attention_mask"]]
                states = model(**inputs, output_hidden_states=True).hidden_states
                real = inputs["attention_mask"].bool()
                total = sum(state[real].float().abs().sum(dim=0).double() for state in states)
                channel_sum = total if channel_sum is None else channel_sum + total
                tokens += int(real.sum()) * len(states)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    head_channels = None
    if stream.head_dense is not None:
        reading = _columns_norm(get_module(model, stream.head_output))
        head_channels = torch.cat(pooled).mean(dim=0) * reading
    return Importance((channel_sum / max(tokens, 1)).float(), [s.float() for s in head_sums], head_channels)


def _without_bias(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A linear's (plain or factorised) output minus its bias, computed without calling the module (and its hooks)."""
    parts = list(module) if isinstance(module, nn.Sequential) else [module]
    for part in parts:
        inputs = nn.functional.linear(inputs, part.weight)
    return inputs


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight of a linear (plain, or the product of a factorised one) as (out, in)."""
    if isinstance(module, nn.Sequential):
        weight = module[0].weight.detach()
        for part in list(module)[1:]:
            weight = part.weight.detach() @ weight
        return weight
    return module.weight.detach()


def _columns_norm(module: nn.Module) -> torch.Tensor:
    return _weight(module).float().norm(dim=0)


def _embedding_columns_norm(module: nn.Module) -> torch.Tensor:
    """Per stream channel, the L2 norm of an embedding table's column (a factorised table: its projection's row)."""
    if isinstance(module, nn.Embedding):
        return module.weight.detach().float().norm(dim=0)
    return _weight(module[-1]).float().norm(dim=1)


def weight_importance(model: nn.Module, adapter: ArchitectureAdapter, stream: ResidualStream) -> Importance:
    """Scores from weights alone: L2 norms of what reads and writes each channel; heads by L1."""
    head_size = adapter.head_size()
    channels = sum(_embedding_columns_norm(get_module(model, path)) for path in stream.embeddings)
    heads = []
    for paths in adapter.all_layer_paths():
        for path in (paths.query, paths.key, paths.value, paths.ffn_in):
            channels = channels + _columns_norm(get_module(model, path))
        for path in (paths.attention_output, paths.ffn_out):
            channels = channels + _weight(get_module(model, path)).float().norm(dim=1)
        rows = sum(_weight(get_module(model, p)).abs().sum(dim=1) for p in (paths.query, paths.key, paths.value))
        per_unit = rows + _weight(get_module(model, paths.attention_output)).abs().sum(dim=0)
        heads.append(per_unit.float().view(-1, head_size).sum(dim=1))
    head_channels = None
    if stream.head_dense is not None:
        head_channels = (_weight(get_module(model, stream.head_dense)).float().norm(dim=1)
                         * _columns_norm(get_module(model, stream.head_output)))
    return Importance(channels, heads, head_channels)


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores, in their original order."""
    return torch.topk(scores, count).indices.sort().values


class WidthPruning(Technique):
    name = "width_pruning"
    stage = Stage.STRUCTURE
    Config = WidthPruningConfig
    State = WidthPruningState
    description = "narrow the hidden width (embeddings, every layer, norms, heads, classifier) by activation importance"

    @classmethod
    def unsupported_reason(cls, adapter: ArchitectureAdapter) -> str | None:
        from autocompress.embedding import SentenceEncoder

        if isinstance(adapter.model, SentenceEncoder):
            return ("a sentence encoder's embedding is its hidden state: narrowing the hidden width would change "
                    "the embedding's size, which the teacher's embeddings (and any index built from them) fix")
        if adapter.residual_stream() is None:
            return (f"the '{adapter.name}' adapter does not name every part that reads or writes the hidden width "
                    f"of this {adapter.model.config.model_type} model (ArchitectureAdapter.residual_stream)")
        if any(p.attention_norm is None or p.output_norm is None for p in adapter.all_layer_paths()):
            return f"the '{adapter.name}' adapter does not name the LayerNorms inside its layers"
        return None

    def apply(self, model, config: WidthPruningConfig, context: ApplyContext):
        adapter = context.adapter
        reason = self.unsupported_reason(adapter)
        if reason is not None:
            raise ValueError(reason)
        stream = adapter.residual_stream()
        hidden = getattr(model.config, stream.width_attribute)
        head_size = adapter.head_size()
        width = kept_width(hidden, head_size, config.width_fraction)
        if width >= hidden:
            return model
        if context.data is None or len(context.data.train) == 0:
            warnings.warn("width_pruning: no training texts to score activations on; channels and heads are chosen "
                          "by weight norms", stacklevel=2)
            importance = weight_importance(model, adapter, stream)
        else:
            importance = activation_importance(model, adapter, stream, _sample_batches(context, config.samples))
        at_most = width // head_size
        heads = [_top(scores, min(at_most, scores.numel())).tolist() for scores in importance.heads]
        head_channels = _top(importance.head_channels, width) if importance.head_channels is not None else None
        narrow(model, adapter, _top(importance.channels, width), heads, head_channels)
        context.record(WidthPruningState(width=width, heads=[len(h) for h in heads]))
        return model

    def rebuild(self, model, config: WidthPruningConfig, state: WidthPruningState, context: ApplyContext):
        keep = torch.arange(state.width)
        return narrow(model, context.adapter, keep, [list(range(count)) for count in state.heads], keep)


@hookimpl
def autocompress_register_techniques(register):
    register.add(WidthPruning)
