"""Attention head pruning: score every head, physically remove the least important ones.

Many heads of a fine-tuned transformer can go with little loss (Michel et al. 2019, "Are
Sixteen Heads Really Better than One?"). Removing a head shrinks four matrix products (the
q/k/v projections and the attention output) and the attention itself, so latency and memory go
down without any sparse kernel.

Scoring:

- ``gradient`` (Michel et al.): a mask ``xi`` of ones multiplies each head's context vector
  (a forward pre-hook on the attention output linear), and a head's importance is
  ``I_h = E_x |dL(x)/dxi_h|`` over ``samples`` training examples, with the cross-entropy loss
  against the labels. The mask holds one entry per example, so one backward pass per batch gives
  the per-example gradients whose absolute values the expectation needs.
- ``l1``: ``sum |W|`` over the head's q, k and v rows and its attention-output columns; needs no
  data. A head whose weights are all zero scores 0.

Scores are divided by their layer's L2 norm, as in the paper, so heads of different layers
compare on one scale. The globally lowest ``fraction`` of all heads is removed, always keeping at
least one head per layer; layers may end with different head counts.

Under grouped-query attention (Llama-layout decoders: each key/value head serves a group of
query heads) the unit removed is a whole group: its key/value head and its query heads, scored
as the sum of its query heads' scores (plus its key/value rows for ``l1``). Removing query heads
alone would leave the key/value projections as large as before; removing a key/value head alone
would orphan its queries. Every layer keeps the same group size, so the attention's
``num_key_value_groups`` stays true.

Gradient scoring without task data raises ``ValueError`` rather than falling back to ``l1``
silently: a trial recorded as ``scoring=gradient`` must have been scored by gradients.

Transformers 5 BERT/DistilBERT attention infer the head count from the q/k/v output width, so
slicing the linears is enough for the forward pass (``autocompress.arch.keep_heads``). The model
config keeps the original head count (the head size is derived from it); the kept heads of every
layer are the step's recorded state, and ``rebuild`` keeps the same heads of a model built from
the original configuration.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.arch import ArchitectureAdapter, LayerPaths, get_module, keep_heads, projection_weight
from autocompress.technique import ApplyContext, ModelAndTokenizer, Stage, Technique
from autocompress.training import Encoded

SCORINGS = ("gradient", "l1")
#: Examples per forward/backward pass during gradient scoring.
SCORING_BATCH = 16


@dataclass(frozen=True)
class HeadPruningConfig:
    #: Fraction of all attention heads (over every layer) removed; each layer keeps at least one.
    fraction: float = 0.25
    #: How heads are scored: "gradient" (needs the task data) or "l1" (weights only).
    scoring: str = "gradient"
    #: Training examples used for gradient scoring.
    samples: int = 64

    def __post_init__(self):
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)):
            raise ValueError(f"fraction must be a number, got {self.fraction!r}")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {self.fraction}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {self.samples!r}")


def _linear(model: nn.Module, path: str) -> nn.Linear:
    module = get_module(model, path)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"head_pruning needs a plain nn.Linear at {path}, found {type(module).__name__} "
                        "(was it factorised by low_rank first?)")
    return module


def group_size(adapter: ArchitectureAdapter) -> int:
    """Query heads per key/value head (1 without grouped-query attention): the heads removed together."""
    kv = adapter.key_value_heads()
    return 1 if kv is None else adapter.model.config.num_attention_heads // kv


def l1_head_scores(model: nn.Module, adapter: ArchitectureAdapter) -> torch.Tensor:
    """``[layers, units]``: sum of |W| over each unit's q/k/v rows and attention-output columns (a unit
    is a head, or a key/value group under grouped-query attention)."""
    head_size, group = adapter.head_size(), group_size(adapter)
    scores = []
    for paths in adapter.all_layer_paths():
        query = projection_weight(model, paths, "query").detach().abs().sum(dim=1)
        columns = _linear(model, paths.attention_output).weight.detach().abs().sum(dim=0)
        key_value = sum(projection_weight(model, paths, p).detach().abs().sum(dim=1) for p in ("key", "value"))
        per_head = (query + columns).view(-1, head_size).sum(dim=1)
        scores.append(per_head.view(-1, group).sum(dim=1) + key_value.view(-1, head_size).sum(dim=1))
    return _stack_layers(scores)


def gradient_head_scores(model: nn.Module, adapter: ArchitectureAdapter, data: Encoded,
                         batch_size: int = 16) -> torch.Tensor:
    """``[layers, heads]``: ``sum_x |dL(x)/dxi_h|`` (Michel et al. 2019) over ``data``'s batches of
    ``batch_size``, ``L`` being the data's own supervised loss (``Encoded.task_loss``: per class, per
    tag, per next token or between embeddings, by the data's type).

    ``xi`` multiplies each head's context vector just before the attention output linear; it has
    one row per example so a single backward pass yields every example's gradient.
    """
    head_size = adapter.head_size()
    layer_paths = adapter.all_layer_paths()
    heads = [_linear(model, p.attention_output).in_features // head_size for p in layer_paths]
    scores = [torch.zeros(h, dtype=torch.float64) for h in heads]
    masks: list[torch.Tensor] = []

    def masking_hook(layer: int):
        def hook(module, args):
            context = args[0]
            split = context.view(*context.shape[:-1], heads[layer], head_size)
            # mask[layer]: (batch, heads) -> broadcast over the sequence and the head width.
            masked = split * masks[layer][:, None, :, None].to(context.dtype)
            return (masked.view(context.shape), *args[1:])
        return hook

    handles = [get_module(model, p.attention_output).register_forward_pre_hook(masking_hook(i))
               for i, p in enumerate(layer_paths)]
    was_training = model.training
    model.eval()  # no dropout: the scores must be deterministic
    try:
        with torch.enable_grad():
            for inputs, labels in data.batches(batch_size):
                batch = labels.shape[0]
                masks[:] = [torch.ones(batch, h, requires_grad=True) for h in heads]
                out = model(**inputs)
                logits = out.logits if hasattr(out, "logits") else out[0]
                # Summed (not averaged) loss: d loss / d mask[b] is example b's own gradient.
                summed = data.task_loss(logits.float(), labels, reduction="sum")
                grads = torch.autograd.grad(summed, masks)
                for layer, grad in enumerate(grads):
                    scores[layer] += grad.detach().abs().sum(dim=0).double()
    finally:
        for handle in handles:
            handle.remove()
        masks.clear()
        model.train(was_training)
    group = group_size(adapter)
    return _stack_layers([s.float().view(-1, group).sum(dim=1) for s in scores])


def _stack_layers(per_layer: Sequence[torch.Tensor]) -> torch.Tensor:
    """Scores as ``[layers, heads]``; NaN pads layers that already have fewer heads."""
    width = max(s.numel() for s in per_layer)
    table = torch.full((len(per_layer), width), float("nan"))
    for layer, scores in enumerate(per_layer):
        table[layer, : scores.numel()] = scores
    return table


def normalise_per_layer(scores: torch.Tensor) -> torch.Tensor:
    """Divide each layer's scores by their L2 norm (Michel et al.), so layers compare on one scale."""
    norms = torch.sqrt(torch.nansum(scores**2, dim=1, keepdim=True))
    return scores / norms.clamp_min(1e-20)


def heads_to_keep(scores: torch.Tensor, fraction: float) -> list[list[int]]:
    """Per layer, the sorted head indices kept after removing the globally lowest ``fraction``.

    ``scores`` is ``[layers, heads]`` (NaN where a layer has fewer heads). Heads are removed in
    ascending score order (ties: lower layer, then lower head first); a head whose removal would
    leave its layer empty is skipped, so each layer keeps at least one.
    """
    present = ~torch.isnan(scores)
    total = int(present.sum())
    to_remove = round(fraction * total)
    order = torch.argsort(torch.where(present, scores, math.inf).flatten(), stable=True)
    heads = scores.shape[1]
    remaining = present.sum(dim=1).tolist()
    removed = torch.zeros_like(present)
    count = 0
    for flat in order.tolist()[:total]:
        if count == to_remove:
            break
        layer, head = divmod(flat, heads)
        if remaining[layer] > 1:
            removed[layer, head] = True
            remaining[layer] -= 1
            count += 1
    keep = present & ~removed
    return [torch.nonzero(row).flatten().tolist() for row in keep]


def prune_layer_heads(model: nn.Module, paths: LayerPaths, keep: Sequence[int], head_size: int,
                      group: int = 1) -> None:
    """Keep only query heads ``keep`` of one layer (whole groups of ``group`` heads under grouped-query
    attention, with their key/value heads): slice q/k/v rows and attention-output columns."""
    for path in (paths.query, paths.key, paths.value, paths.attention_output):
        _linear(model, path)  # a clear error when a layer is not made of plain linears
    key_value = None if group == 1 else sorted({head // group for head in keep})
    keep_heads(model, paths, keep, head_size, key_value)


def query_heads(units: Sequence[int], group: int) -> list[int]:
    """The query heads of the kept units (heads, or key/value groups of ``group`` heads)."""
    return [unit * group + j for unit in units for j in range(group)]


def _scoring_data(context: ApplyContext, samples: int):
    """The encoded training sample gradient scoring sees (its ``batches`` and its ``task_loss``)."""
    from autocompress.training import encode

    train = context.data.train
    chosen = sorted(random.Random(context.seed).sample(range(len(train)), min(samples, len(train))))
    subset = train.subset(chosen)
    return encode(context.tokenizer, subset, context.max_length)


@dataclass(frozen=True)
class HeadPruningState:
    #: Per layer, the indices of the (query) heads kept; under grouped-query attention whole groups.
    kept_heads: list[list[int]]


class HeadPruning(Technique):
    name = "head_pruning"
    stage = Stage.STRUCTURE
    Config = HeadPruningConfig
    State = HeadPruningState
    description = "Attention head pruning by gradient (Michel et al. 2019) or L1 importance (heads removed)"

    @classmethod
    def unsupported_reason_for(cls, model: ModelAndTokenizer) -> str | None:
        shared = model.adapter.shared_head_tables()
        if shared:
            return (f"{', '.join(shared)} holds one entry per attention head for every layer at once; heads "
                    "removed layer by layer would no longer line up with it")
        return None

    def score(self, model: nn.Module, config: HeadPruningConfig, context: ApplyContext) -> torch.Tensor:
        """Per-layer-normalised head importance, ``[layers, heads]``."""
        if config.scoring == "l1":
            return normalise_per_layer(l1_head_scores(model, context.adapter))
        if context.data is None or len(context.data.train) == 0:
            raise ValueError("head_pruning: scoring='gradient' needs the task's training data, and none was given; "
                             "use scoring='l1' to prune heads from the weights alone")
        sample = _scoring_data(context, config.samples)
        return normalise_per_layer(gradient_head_scores(model, context.adapter, sample, SCORING_BATCH))

    def apply(self, model, config: HeadPruningConfig, context: ApplyContext):
        if config.fraction == 0:
            return model
        group = group_size(context.adapter)
        keep = [query_heads(units, group) for units in heads_to_keep(self.score(model, config, context),
                                                                     config.fraction)]
        state = HeadPruningState(kept_heads=keep)
        context.record(state)
        return self.rebuild(model, config, state, context)

    def rebuild(self, model, config: HeadPruningConfig, state: HeadPruningState, context: ApplyContext):
        adapter = context.adapter
        head_size, group = adapter.head_size(), group_size(adapter)
        for paths, kept in zip(adapter.all_layer_paths(), state.kept_heads, strict=True):
            if len(kept) * head_size != _linear(model, paths.attention_output).in_features:
                prune_layer_heads(model, paths, kept, head_size, group)
        return model


@hookimpl
def autocompress_register_techniques(register):
    register.add(HeadPruning)
