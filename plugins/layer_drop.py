"""Layer dropping: keep ``k`` of the ``n`` encoder layers, DistilBERT-style.

The student is the teacher with some encoder layers removed; the kept layers keep the teacher's
weights (DistilBERT initialises its student from every other teacher layer). Which layers:

- ``every_other``: evenly spaced, always including the last layer (6 -> 3 keeps 1, 3, 5);
- ``top`` / ``bottom``: the last / first ``k``;
- ``importance``: removes, one at a time, the layer that changes its own input the least: one minus the
  cosine between the hidden states entering and leaving it, averaged over the real tokens of a sample of
  the training texts (ShortGPT's "block influence", Men et al. 2024), scored again after each removal.
  Each removal costs one forward pass that stops after the last layer (no head, no vocabulary
  projection), so a 30-layer decoder is halved in 15 passes; scoring every candidate removal by its
  effect on the final state would take hundreds.

Layers the adapter pins (``pinned_layers``: ModernBERT's first layer, built without an attention norm)
are always kept and the strategy chooses among the others.

The layer list is replaced by the kept layers and the config's layer count is updated, so plain
``AutoModelForSequenceClassification.from_pretrained`` reloads the result. The kept indices are the
step's recorded state (``rebuild`` keeps the same layers of a model built from the original
configuration), and ``context.layer_origin`` receives the teacher layer each student layer came
from, so distillation can match each student layer to its source.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.arch import ArchitectureAdapter, get_module, set_module
from autocompress.technique import ApplyContext, Stage, Technique

STRATEGIES = ("every_other", "top", "bottom", "importance")
#: Config attribute holding the layer count, per adapter name; other families are detected.
LAYER_COUNT_ATTRIBUTE = {"bert": "num_hidden_layers", "distilbert": "n_layers"}
#: Texts of the training split used to score layers for ``importance``.
IMPORTANCE_SAMPLE = 64


@dataclass(frozen=True)
class LayerDropConfig:
    #: Encoder layers kept; when >= the model's layer count nothing is dropped.
    keep_layers: int = 3
    #: Which layers are kept: every_other, top, bottom or importance (see the module docstring).
    strategy: str = "every_other"

    def __post_init__(self):
        if isinstance(self.keep_layers, bool) or not isinstance(self.keep_layers, int):
            raise ValueError(f"keep_layers must be an integer, got {self.keep_layers!r}")
        if self.keep_layers < 1:
            raise ValueError(f"keep_layers must be >= 1, got {self.keep_layers}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")


def positional_layers(num_layers: int, keep: int, strategy: str, pinned: Sequence[int] = ()) -> list[int]:
    """Indices kept by the strategies that need no data: every_other, top, bottom. The ``pinned`` layers
    (the adapter's ``pinned_layers``) are always kept; the strategy chooses the others among the rest."""
    if pinned:
        rest = [i for i in range(num_layers) if i not in set(pinned)]
        chosen = positional_layers(len(rest), keep - len(pinned), strategy) if keep > len(pinned) else []
        return sorted({*pinned, *(rest[i] for i in chosen)})
    if strategy == "top":
        return list(range(num_layers - keep, num_layers))
    if strategy == "bottom":
        return list(range(keep))
    if strategy == "every_other":
        # Steps of n/k counted back from the last layer; floors differ by >= 1 since n >= k.
        return sorted(num_layers - 1 - (j * num_layers) // keep for j in range(keep))
    raise ValueError(f"strategy {strategy!r} needs data; use importance_layers")


def layer_count_attribute(adapter: ArchitectureAdapter) -> str:
    if adapter.name in LAYER_COUNT_ATTRIBUTE:
        return LAYER_COUNT_ATTRIBUTE[adapter.name]
    config = adapter.model.config
    for name in ("num_hidden_layers", "n_layers", "num_layers", "n_layer"):
        if name in config.to_dict():
            return name
    raise ValueError(f"cannot tell which config attribute of {type(config).__name__} holds the layer count; "
                     f"add adapter '{adapter.name}' to LAYER_COUNT_ATTRIBUTE in {__name__}")


def keep_layers(model: nn.Module, adapter: ArchitectureAdapter, indices: Sequence[int]) -> nn.Module:
    """Replace the encoder layer list by the layers at ``indices`` (in order) and fix the config."""
    path = adapter.layer_list_path()
    layers = get_module(model, path)
    count_attribute = layer_count_attribute(adapter)
    num_layers = len(layers)
    set_module(model, path, nn.ModuleList([layers[i] for i in indices]))
    for position, layer in enumerate(get_module(model, path)):
        for module in layer.modules():  # cache indices (BERT attention's layer_idx) follow the new order
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    config = model.config
    setattr(config, count_attribute, len(indices))
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == num_layers:
        config.layer_types = [layer_types[i] for i in indices]
    parent_path = path.rpartition(".")[0]
    parent = get_module(model, parent_path) if parent_path else model
    if getattr(parent, "n_layers", None) == num_layers:  # DistilBERT's Transformer keeps its own count
        parent.n_layers = len(indices)
    return model


def _sample_inputs(context: ApplyContext) -> list[dict[str, torch.Tensor]]:
    from autocompress.training import sample_batches

    return sample_batches(context.tokenizer, context.data.train, IMPORTANCE_SAMPLE, context.seed, context.max_length,
                          32)


class _LastLayerDone(Exception):
    """Raised by the last layer's hook: the pass has what it needs, the rest of the model is skipped."""


def _hidden_of(args: tuple, kwargs: dict, output) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states entering a layer, leaving it), whatever the family's call convention."""
    entering = args[0] if args else next(value for key, value in kwargs.items()
                                         if key in ("hidden_states", "hidden_state", "x"))
    leaving = output[0] if isinstance(output, tuple | list) else output
    return entering, leaving


def block_influence(model: nn.Module, layers: Sequence[nn.Module],
                    batches: list[dict[str, torch.Tensor]]) -> list[float]:
    """Per layer of ``layers`` (the model's current layer list): 1 - cosine(hidden state in, out), averaged
    over the real tokens of ``batches`` (over every position when a family's layers see no padded grid)."""
    totals, weight = torch.zeros(len(layers), dtype=torch.float64), 0.0
    current: dict[int, torch.Tensor] = {}

    def recorder(index: int):
        def record(module, args, kwargs, output):
            entering, leaving = _hidden_of(args, kwargs, output)
            current[index] = 1 - nn.functional.cosine_similarity(entering.float(), leaving.float(), dim=-1)
            if index == len(layers) - 1:
                raise _LastLayerDone
        return record

    handles = [layer.register_forward_hook(recorder(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for inputs in batches:
            current.clear()
            try:
                model(**inputs)
            except _LastLayerDone:
                pass
            mask = inputs.get("attention_mask")
            tokens = float(mask.sum()) if mask is not None else float(current[0].numel())
            for index, change in current.items():
                if mask is not None and change.shape == mask.shape:
                    totals[index] += float((change * mask).sum())
                else:  # the layer sees no padded grid (unpadded tokens): every position is a real token
                    totals[index] += float(change.mean()) * tokens
            weight += tokens
    finally:
        for handle in handles:
            handle.remove()
    return (totals / weight).tolist()


def importance_layers(model: nn.Module, adapter: ArchitectureAdapter, keep: int,
                      batches: list[dict[str, torch.Tensor]]) -> list[int]:
    """Remove, one at a time, the layer with the least block influence (never a pinned layer), scoring
    the remaining layers again after each removal; the model is left whole."""
    path = adapter.layer_list_path()
    layers = get_module(model, path)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            kept = list(range(len(layers)))
            pinned = set(adapter.pinned_layers())
            while len(kept) > max(keep, len(pinned)):
                set_module(model, path, nn.ModuleList([layers[i] for i in kept]))
                scores = block_influence(model, [layers[i] for i in kept], batches)
                candidates = {index: score for index, score in zip(kept, scores, strict=True) if index not in pinned}
                kept.remove(min(candidates, key=candidates.get))
    finally:
        set_module(model, path, layers)
        model.train(was_training)
    return kept


@dataclass(frozen=True)
class LayerDropState:
    #: Indices (before dropping) of the kept layers, in order.
    kept_layers: list[int]


class LayerDrop(Technique):
    name = "layer_drop"
    stage = Stage.STRUCTURE
    Config = LayerDropConfig
    State = LayerDropState
    description = "keep k of the n encoder layers (DistilBERT-style student initialised from the teacher)"

    def apply(self, model, config: LayerDropConfig, context: ApplyContext):
        adapter = context.adapter
        num_layers = adapter.num_layers()
        if config.keep_layers >= num_layers:
            return model
        strategy = config.strategy
        if strategy == "importance" and context.data is None:
            warnings.warn("layer_drop: strategy 'importance' needs the task's training texts and none were given; "
                          "using 'every_other'", stacklevel=2)
            strategy = "every_other"
        if strategy == "importance":
            indices = importance_layers(model, adapter, config.keep_layers, _sample_inputs(context))
        else:
            indices = positional_layers(num_layers, config.keep_layers, strategy, adapter.pinned_layers())
        state = LayerDropState(kept_layers=list(indices))
        context.record(state)
        origin = context.layer_origin
        context.layer_origin = [origin[i] if origin is not None else i for i in indices]
        return self.rebuild(model, config, state, context)

    def rebuild(self, model, config: LayerDropConfig, state: LayerDropState, context: ApplyContext):
        return keep_layers(model, context.adapter, state.kept_layers)


@hookimpl
def autocompress_register_techniques(register):
    register.add(LayerDrop)
