"""Save and reload compressed candidates.

What is saved is the float model before post-training steps (quantization), as
``model.safetensors`` with one tensor per module path, its ``config.json``, the tokenizer, and
``autocompress.json`` (the plan, the post steps, measured numbers). Reloading builds the model
from its config, resizes every linear whose saved shape differs (pruned heads and FFN widths
may differ per layer), loads the weights strictly, then re-applies the post steps, which are
deterministic functions of the float weights. Nothing is unpickled.

When the structure matches what the config describes (e.g. uniform FFN pruning, dropped layers,
trimmed vocabulary) and no post step is recorded, plain
``AutoModelForSequenceClassification.from_pretrained(dir)`` loads the directory too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autocompress import __version__
from autocompress.arch import FactorizedEmbedding, set_module
from autocompress.deployment import restore_deployment
from autocompress.errors import InputError

MANIFEST = "autocompress.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


def save_candidate(
    directory: str | Path,
    float_model: nn.Module,
    tokenizer: Any,
    post_steps: list[dict[str, Any]],
    info: dict[str, Any] | None = None,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in float_model.state_dict().items()}
    # Tied weights share storage; safetensors refuses shared tensors, hence the clone above.
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    float_model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    manifest = {
        "format": FORMAT_VERSION,
        "autocompress_version": __version__,
        "model_class": type(float_model).__name__,
        "post_steps": post_steps,
        **(info or {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return directory


def _linear_like(state: dict[str, torch.Tensor], prefix: str) -> nn.Linear:
    weight = state[f"{prefix}.weight"]
    return nn.Linear(weight.shape[1], weight.shape[0], bias=f"{prefix}.bias" in state, dtype=weight.dtype)


def _rebuild_linears(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every linear and embedding the shape its saved weights have.

    A linear saved with a different shape (pruned heads or FFN neurons, per layer) is rebuilt at
    that shape. A module saved as two factors, ``path.0.weight`` + ``path.1.weight``, is rebuilt
    from them: a linear as ``nn.Sequential`` of the two thin linears (low-rank factorisation), an
    embedding as ``FactorizedEmbedding(Embedding(V, r), Linear(r, H))``.
    """
    for path, module in list(model.named_modules()):
        factors = f"{path}.weight" not in state and f"{path}.0.weight" in state and f"{path}.1.weight" in state
        if isinstance(module, nn.Linear):
            if factors:
                set_module(model, path, nn.Sequential(_linear_like(state, f"{path}.0"),
                                                      _linear_like(state, f"{path}.1")))
            elif f"{path}.weight" in state and state[f"{path}.weight"].shape != module.weight.shape:
                set_module(model, path, _linear_like(state, path))
        elif isinstance(module, nn.Embedding) and factors:
            vocabulary, rank = state[f"{path}.0.weight"].shape
            embedding = nn.Embedding(vocabulary, rank, padding_idx=module.padding_idx,
                                     dtype=state[f"{path}.0.weight"].dtype)
            set_module(model, path, FactorizedEmbedding(embedding, _linear_like(state, f"{path}.1")))


def load_pretrained(directory: str | Path, host: Any = None) -> tuple[nn.Module, Any]:
    """Reload a directory written by autocompress (``best/`` or an export): returns (model, tokenizer).

    The model is in eval mode and in its deployed form (quantized when the plan quantized it).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{directory}: no {MANIFEST}; not a directory written by autocompress")
    manifest = json.loads(manifest_path.read_text())
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    model = AutoModelForSequenceClassification.from_config(config)
    state = load_file(str(directory / WEIGHTS))
    _rebuild_linears(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied/derived buffers (e.g. position_ids) may be absent; any missing weight is an error.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise InputError(f"{directory}: weights do not match the model: missing {missing}, unexpected {unexpected}")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if manifest.get("post_steps"):
        model = apply_post_steps(model, tokenizer, manifest["post_steps"], host)
        model = restore_deployment(directory, model)  # what a runtime needs to finish it (static int8)
    return model, tokenizer


def apply_post_steps(model: nn.Module, tokenizer: Any, steps: list[dict[str, Any]], host: Any = None) -> nn.Module:
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.technique import ApplyContext

    host = host or build_host()
    context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=tokenizer)
    for step in steps:
        technique = host.techniques[step["technique"]]
        model = technique().apply(model, technique.make_config(step["config"]), context)
    return model.eval()


def loads_with_plain_transformers(directory: str | Path) -> bool:
    """True when ``AutoModelForSequenceClassification.from_pretrained(directory)`` gives the same model:
    every saved tensor has the shape the config implies and no post-training step is recorded."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForSequenceClassification

    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    if manifest.get("post_steps"):
        return False
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AutoModelForSequenceClassification.from_config(config)
                    .state_dict().items()}
    with safe_open(str(directory / WEIGHTS), framework="pt") as saved:
        shapes = {k: tuple(saved.get_slice(k).get_shape()) for k in saved.keys()}  # noqa: SIM118
    return all(expected.get(k) == shape for k, shape in shapes.items()) and all(
        k in shapes or k.endswith("position_ids") for k in expected)
