"""Post-training steps that only a runtime can finish: typed requests that targets dispatch on.

Dynamic int8 and bf16 are complete in PyTorch: the technique returns the quantized model and any
target measures it. **Static int8** is not: its activation scales come from running calibration
data through the graph the runtime executes (ONNX Runtime's ``quantize_static``, OpenVINO's
NNCF), so the quantization technique returns a ``StaticInt8Request``: the float model plus
everything a runtime needs to quantize it (a calibration sample of TRAINING texts, the encoder
layers to keep in float, the layers' module paths). A target recognises it by type
(``isinstance(model, StaticInt8Request)``), finishes the deployment its own way, or refuses it
with a reason. In PyTorch, the request runs its float model.

Saved candidates keep what the request carried: ``save_deployment(directory, deployed)`` writes
``deployment.json`` and ``calibration.safetensors`` next to the weights, and
``restore_deployment(directory, model)`` puts them back after ``load_pretrained`` re-applied the
post steps (which, without task data, cannot sample calibration texts or measure sensitivity
again). A request without them (a directory written by hand) is *unresolved*: targets and the
ONNX export refuse it, naming what is missing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import ExportError, InputError

DEPLOYMENT_FILE = "deployment.json"
CALIBRATION_FILE = "calibration.safetensors"
#: The only split calibration texts are drawn from: validation picks models, test reports them.
CALIBRATION_SPLIT = "train"


@dataclass(frozen=True)
class CalibrationSample:
    """Tokenised calibration texts, padded to one width: the inputs a runtime calibrates on."""

    input_ids: torch.Tensor  # (examples, width), int64
    attention_mask: torch.Tensor  # (examples, width), 1 for real tokens
    seed: int = 0
    split: str = CALIBRATION_SPLIT

    def __post_init__(self):
        if self.input_ids.shape != self.attention_mask.shape or self.input_ids.dim() != 2:
            raise ValueError(f"calibration input_ids {tuple(self.input_ids.shape)} and attention_mask "
                             f"{tuple(self.attention_mask.shape)} must be the same (examples, width)")

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def examples(self) -> Iterator[dict[str, torch.Tensor]]:
        """One batch of one example at a time, trimmed to its own length (as it would be served)."""
        for ids, mask in zip(self.input_ids, self.attention_mask, strict=True):
            length = max(1, int(mask.sum()))
            yield {"input_ids": ids[None, :length].clone(), "attention_mask": mask[None, :length].clone()}

    @classmethod
    def from_texts(cls, tokenizer: Any, texts: Sequence[str], max_length: int, seed: int = 0) -> CalibrationSample:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return cls(encoded["input_ids"].long(), encoded["attention_mask"].long(), seed=seed)


def calibration_texts(data: Any, size: int, seed: int) -> list[str]:
    """A seeded sample of ``size`` texts from ``data.train``: never validation or test."""
    train = data.train.texts
    if not train:
        raise InputError("static int8 needs calibration texts, but the training split is empty")
    return random.Random(seed).sample(list(train), min(size, len(train)))


class DeploymentRequest(nn.Module):
    """A float model plus what a runtime needs to finish deploying it; runs the float model in PyTorch."""

    kind: str = "deployment"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def unresolved_reason(self) -> str | None:
        """Why a runtime cannot finish this deployment (something it needs is missing), or None."""
        return None

    def require_resolved(self, who: str) -> None:
        """Raise ExportError naming ``who`` (a target or export) when the request is unresolved."""
        reason = self.unresolved_reason()
        if reason is not None:
            raise ExportError(f"{who}: {reason}")

    def save(self, directory: Path) -> None:
        """Write what the request carries beside a saved candidate."""

    def restore(self, directory: Path) -> None:
        """Read back what ``save`` wrote."""


class StaticInt8Request(DeploymentRequest):
    """Static int8 of every encoder layer but ``float_layers``, calibrated on ``calibration``.

    ``layer_scopes[i]`` is the module path of encoder layer ``i`` (``bert.encoder.layer.3``):
    runtimes keep the linears under ``float_scopes()`` in float. ``sensitivity[i]`` is how much
    quantizing layer ``i`` alone changed the validation logits (what chose ``float_layers``).
    ``embedding_scope``: the word-embedding table to store in int8 too (weight-only), or None.
    """

    kind = "static_int8"

    def __init__(self, model: nn.Module, layer_scopes: Sequence[str], calibration: CalibrationSample | None,
                 float_layers: Sequence[int] | None, sensitivity: Sequence[float] | None = None,
                 embedding_scope: str | None = None):
        super().__init__(model)
        self.layer_scopes = tuple(layer_scopes)
        self.embedding_scope = embedding_scope
        self.calibration = calibration
        self.float_layers = None if float_layers is None else tuple(sorted(int(i) for i in float_layers))
        self.sensitivity = None if sensitivity is None else tuple(float(s) for s in sensitivity)
        if self.float_layers and not all(0 <= i < len(self.layer_scopes) for i in self.float_layers):
            raise ValueError(f"float layers {self.float_layers} outside 0..{len(self.layer_scopes) - 1}")

    def float_scopes(self) -> tuple[str, ...]:
        return tuple(self.layer_scopes[i] for i in self.float_layers or ())

    def unresolved_reason(self) -> str | None:
        if self.calibration is None or self.float_layers is None:
            return ("this static int8 candidate carries no calibration sample (it is saved with the candidate as "
                    f"{CALIBRATION_FILE} and {DEPLOYMENT_FILE}; a directory without them cannot be calibrated "
                    "again, since calibration texts come from the search's training split)")
        return None

    def describe(self) -> str:
        kept = ", ".join(self.float_scopes()) or "none"
        samples = "no calibration sample" if self.calibration is None else f"{len(self.calibration)} training texts"
        table = f"; {self.embedding_scope} in int8" if self.embedding_scope else ""
        return f"static int8 calibrated on {samples}; layers kept in float: {kept}{table}"

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        self.require_resolved("saving a static int8 candidate")
        save_file({"input_ids": self.calibration.input_ids.contiguous(),
                   "attention_mask": self.calibration.attention_mask.contiguous()},
                  str(directory / CALIBRATION_FILE), metadata={"split": self.calibration.split,
                                                              "seed": str(self.calibration.seed)})
        (directory / DEPLOYMENT_FILE).write_text(json.dumps({
            "kind": self.kind, "layer_scopes": list(self.layer_scopes), "float_layers": list(self.float_layers),
            "embedding_scope": self.embedding_scope,
            "sensitivity": None if self.sensitivity is None else list(self.sensitivity),
            "calibration": {"file": CALIBRATION_FILE, "split": self.calibration.split, "seed": self.calibration.seed,
                            "examples": len(self.calibration)},
        }, indent=2))

    def restore(self, directory: Path) -> None:
        from safetensors import safe_open

        record_path, tensors_path = directory / DEPLOYMENT_FILE, directory / CALIBRATION_FILE
        if not record_path.is_file() or not tensors_path.is_file():
            return  # stays unresolved; whoever needs the sample says so
        record = json.loads(record_path.read_text())
        if record.get("kind") != self.kind:
            raise InputError(f"{record_path}: records a '{record.get('kind')}' deployment, but the post steps in "
                             f"autocompress.json make a '{self.kind}' one")
        with safe_open(str(tensors_path), framework="pt") as saved:
            metadata = saved.metadata() or {}
            self.calibration = CalibrationSample(saved.get_tensor("input_ids"), saved.get_tensor("attention_mask"),
                                                 seed=int(metadata.get("seed", 0)),
                                                 split=metadata.get("split", CALIBRATION_SPLIT))
        self.float_layers = tuple(record["float_layers"])
        self.sensitivity = None if record.get("sensitivity") is None else tuple(record["sensitivity"])


def unwrap(model: nn.Module) -> nn.Module:
    """The PyTorch model inside a deployment request (or ``model`` itself)."""
    return model.model if isinstance(model, DeploymentRequest) else model


def save_deployment(directory: str | Path, deployed: nn.Module) -> None:
    """Write what a deployment request carries next to a saved candidate (nothing for other models)."""
    if isinstance(deployed, DeploymentRequest):
        deployed.save(Path(directory))


def restore_deployment(directory: str | Path, model: nn.Module) -> nn.Module:
    """Give a reloaded deployment request back what ``save_deployment`` wrote; returns ``model``."""
    if isinstance(model, DeploymentRequest):
        model.restore(Path(directory))
    return model
