"""One converted artifact per live model: what runtime targets keep between measurements.

A search measures the teacher beside every new candidate, and scores a candidate after measuring
it: converting the same unchanged model again each time (an ONNX export, an OpenVINO
conversion, a calibration) would cost seconds per call. ``PerModelCache`` keeps one artifact per
model object, rebuilt when any of its tensors changed, and released (``cleanup``) when the model
is garbage-collected or the artifact is replaced.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

import torch
from torch import nn

T = TypeVar("T")


def model_version(model: nn.Module) -> tuple:
    """Changes whenever a tensor of the model is replaced, reshaped or modified in place."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    version = [(name, tuple(t.shape), t.dtype, t.data_ptr(), t._version) for name, t in tensors]
    # int8 modules keep their weights in packed objects, outside parameters and buffers (and
    # state_dict() builds new tensors from them on every call): a new packed object is new weights.
    version += [(name, key, id(value)) for name, module in model.named_modules()
                for key, value in vars(module).items() if isinstance(value, torch.ScriptObject)]
    return tuple(version)


class PerModelCache(Generic[T]):
    """``get(model, build)``: the artifact built for this same, unchanged model, or a new one."""

    def __init__(self, cleanup: Callable[[T], None] | None = None):
        self._entries: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, T]] = weakref.WeakKeyDictionary()
        self._cleanup = cleanup

    def get(self, model: nn.Module, build: Callable[[], T]) -> T:
        version = model_version(model)
        cached = self._entries.get(model)
        if cached is not None:
            if cached[0] == version:
                return cached[1]
            if self._cleanup is not None:
                self._cleanup(cached[1])
        artifact = build()
        self._entries[model] = (version, artifact)
        if self._cleanup is not None:
            weakref.finalize(model, self._cleanup, artifact)
        return artifact
