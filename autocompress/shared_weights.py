"""Shared (tied) weights: each distinct tensor counted once, saved once, and tied again on load.

``model.state_dict()`` lists a tensor once per path that reaches it: a module used at two places
(cross-layer parameter sharing) or one ``Parameter`` held by two modules (tied embeddings) appears
under every name. Counting or saving per entry would count and store it once per use, and a model
rebuilt from such a file would come back untied. This module is the one place that tells entries
apart by what they hold:

- a dense tensor is identified by its memory (data pointer, dtype, shape, strides): two entries
  that are the same view of the same storage are one tensor;
- a tensor subclass that wraps others (torchao's packed int4 weights, whose own data pointer is 0
  for every one) by the tensors it wraps;
- anything else (int8 packed weights, which unpack to fresh tensors on every call; empty tensors)
  by the module that owns it and its local name, so a shared module still counts once.

The first name in ``state_dict`` order holding a tensor is its canonical name; every other name is
a tie ``alias -> canonical``. ``autocompress.measure`` counts ``distinct_state``,
``autocompress.model_io`` saves it and records the ties in the manifest, and reload restores them
with ``tie``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def _identity(name: str, value: Any, owners: Mapping[str, nn.Module]) -> tuple:
    if isinstance(value, torch.Tensor) and callable(getattr(type(value), "__tensor_flatten__", None)):
        # A tensor subclass wrapping others (torchao's packed int4 weights) reports no memory of its
        # own (data_ptr 0 for every one): it is the tensors it holds.
        inner, _ = value.__tensor_flatten__()
        return ("wrapper", type(value).__qualname__,
                tuple(_identity(f"{name}.{part}", getattr(value, part), owners) for part in inner))
    if (isinstance(value, torch.Tensor) and not value.is_quantized and value.numel() > 0
            and value.device.type != "meta"):
        return ("memory", value.device.type, value.data_ptr(), value.dtype, tuple(value.shape), tuple(value.stride()))
    owner, _, local = name.rpartition(".")
    return ("owned", id(owners[owner]), local)


def distinct_state(model: nn.Module, keep_vars: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """``(state, ties)``: each distinct entry of ``model.state_dict()`` once under its canonical name,
    and ``{alias: canonical}`` for every other name that holds the same tensor."""
    owners = dict(model.named_modules(remove_duplicate=False))
    canonical: dict[tuple, str] = {}
    state: dict[str, Any] = {}
    ties: dict[str, str] = {}
    for name, value in model.state_dict(keep_vars=keep_vars).items():
        key = _identity(name, value, owners)
        if key in canonical:
            ties[name] = canonical[key]
        else:
            canonical[key] = name
            state[name] = value
    return state, ties


def tie_groups(ties: Mapping[str, str]) -> list[list[str]]:
    """Ties as sorted groups of names holding one tensor (canonical name first), sorted by it."""
    groups: dict[str, list[str]] = {}
    for alias, canonical in ties.items():
        groups.setdefault(canonical, [canonical]).append(alias)
    return sorted([group[0], *sorted(group[1:])] for group in groups.values())


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, local = name.rpartition(".")
    return (model.get_submodule(path) if path else model), local


def tie(model: nn.Module, ties: Mapping[str, str]) -> None:
    """Make every ``alias`` hold the very tensor (the same ``Parameter`` or buffer) its ``canonical`` holds.

    A technique's ``rebuild`` normally recreates shared modules itself (then this changes nothing);
    ties it did not recreate, e.g. a parameter shared between two distinct modules, are made here.
    """
    for alias, canonical in ties.items():
        owner, local = _owner(model, alias)
        source_owner, source_local = _owner(model, canonical)
        tensor = getattr(source_owner, source_local)
        if getattr(owner, local) is not tensor:
            setattr(owner, local, tensor)  # nn.Module routes a Parameter/buffer to its registry
