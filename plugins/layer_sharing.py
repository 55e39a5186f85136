"""Cross-layer parameter sharing, ALBERT-style: groups of consecutive layers run one layer's weights.

ALBERT (Lan et al. 2020) shares one set of layer weights across all of its layers. Here the
encoder layers are split into consecutive groups of ``group_size`` (the last group may be
smaller) and every layer position of a group runs the very same module, the group's
representative: the model stores one layer per group. Parameters and saved bytes go down by
(layers - groups) layers' worth; every position still runs, so latency does not change and is
not claimed.

Which layer represents a group (``representative``):

- ``best`` (default): the member whose weights, run at every position of the group, change the
  group's output (the hidden state after its last layer) least on a sample of the training
  texts, relative to the unshared model; without data it falls back to ``middle`` with a warning;
- ``middle``: the group's middle layer (the lower middle for even sizes), trained at the depth
  closest to every member's;
- ``first``: the group's first layer.

The state is one representative index per layer position; ``rebuild`` makes the same positions
share the same modules of a model built from the original configuration, so a reloaded model's
``layers[i] is layers[j]`` again (the saved file holds each shared tensor once, the manifest its
ties). Recovery training trains shared weights correctly by construction: a shared module is one
set of parameters, autograd sums the gradients of every position that uses it, and the optimiser
(over ``model.parameters()``, which lists each parameter once) updates it once per step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress import hookimpl
from autocompress.arch import ArchitectureAdapter, get_module, set_module
from autocompress.technique import ApplyContext, ModelAndTokenizer, Stage, Technique

REPRESENTATIVES = ("best", "middle", "first")
#: Texts of the training split used to choose representatives for ``best``.
SAMPLE_TEXTS = 64


@dataclass(frozen=True)
class LayerSharingConfig:
    #: Consecutive layers per group; each group runs one layer's weights (1: no sharing).
    group_size: int = 2
    #: Which member's weights a group runs: best, middle or first (see the module docstring).
    representative: str = "best"

    def __post_init__(self):
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ValueError(f"group_size must be an integer, got {self.group_size!r}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.representative not in REPRESENTATIVES:
            raise ValueError(f"representative must be one of {', '.join(REPRESENTATIVES)}, "
                             f"got {self.representative!r}")


@dataclass(frozen=True)
class LayerSharingState:
    #: For each layer position, the index of the layer whose weights (module) it runs.
    representatives: list[int]


def groups_of(num_layers: int, group_size: int) -> list[list[int]]:
    """Consecutive layer indices in groups of ``group_size`` (the last one may be smaller)."""
    return [list(range(start, min(start + group_size, num_layers))) for start in range(0, num_layers, group_size)]


def share_layers(model: nn.Module, adapter: ArchitectureAdapter, representatives: Sequence[int]) -> nn.Module:
    """Make layer position ``i`` run layer ``representatives[i]``: the same module object, not a copy."""
    path = adapter.layer_list_path()
    layers = get_module(model, path)
    set_module(model, path, nn.ModuleList([layers[r] for r in representatives]))
    return model


def _sample_batches(context: ApplyContext) -> list[dict[str, torch.Tensor]]:
    from autocompress.training import sample_batches

    return sample_batches(context.tokenizer, context.data.train, SAMPLE_TEXTS, context.seed, context.max_length,
                          32)


def best_representatives(model: nn.Module, adapter: ArchitectureAdapter, groups: list[list[int]],
                         batches: list[dict[str, torch.Tensor]]) -> list[int]:
    """Per group, the member whose weights at every position change the group's output least.

    The change is the mean squared difference of the hidden state after the group's last layer
    over real tokens, relative to its mean square in the unshared model; one group at a time, the
    others unshared.
    """
    path = adapter.layer_list_path()
    layers = get_module(model, path)
    was_training = model.training
    model.eval()

    def group_outputs(group: list[int]) -> list[torch.Tensor]:
        outputs = []
        for inputs in batches:
            hidden = model(**inputs, output_hidden_states=True).hidden_states[group[-1] + 1]
            outputs.append(hidden[inputs["attention_mask"].bool()].float())
        return outputs

    chosen = []
    try:
        with torch.inference_mode():
            for group in groups:
                reference = group_outputs(group)
                scale = sum(float(r.pow(2).sum()) for r in reference)
                changes = {}
                for candidate in group:
                    set_module(model, path, nn.ModuleList([layers[candidate] if i in group else layer
                                                           for i, layer in enumerate(layers)]))
                    error = sum(float((o - r).pow(2).sum()) for o, r in zip(group_outputs(group), reference,
                                                                           strict=True))
                    changes[candidate] = error / max(scale, 1e-20)
                    set_module(model, path, layers)
                chosen.append(min(changes, key=changes.get))  # ties: the lowest index
    finally:
        set_module(model, path, layers)
        model.train(was_training)
    return chosen


class LayerSharing(Technique):
    name = "layer_sharing"
    stage = Stage.STRUCTURE
    Config = LayerSharingConfig
    State = LayerSharingState
    description = "ALBERT-style cross-layer sharing: groups of consecutive layers run one layer's weights"

    @classmethod
    def unsupported_reason_for(cls, model: ModelAndTokenizer) -> str | None:
        if model.adapter.causal:
            return ("a decoder layer owns one slot of the key/value cache (its layer_idx); one module run at "
                    "several positions would write the same slot twice")
        return None

    def apply(self, model, config: LayerSharingConfig, context: ApplyContext):
        adapter = context.adapter
        groups = groups_of(adapter.num_layers(), config.group_size)
        if all(len(group) == 1 for group in groups):
            return model
        strategy = config.representative
        if strategy == "best" and context.data is None:
            warnings.warn("layer_sharing: representative 'best' needs the task's training texts and none were given; "
                          "using 'middle'", stacklevel=2)
            strategy = "middle"
        if strategy == "best":
            chosen = best_representatives(model, adapter, groups, _sample_batches(context))
        else:
            chosen = [group[(len(group) - 1) // 2] if strategy == "middle" else group[0] for group in groups]
        state = LayerSharingState(representatives=[rep for group, rep in zip(groups, chosen, strict=True)
                                                    for _ in group])
        context.record(state)
        return self.rebuild(model, config, state, context)

    def rebuild(self, model, config: LayerSharingConfig, state: LayerSharingState, context: ApplyContext):
        return share_layers(model, context.adapter, state.representatives)


@hookimpl
def autocompress_register_techniques(register):
    register.add(LayerSharing)
