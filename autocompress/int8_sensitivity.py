"""How much int8 hurts each encoder layer: what accuracy-aware fallback keeps in float.

Each layer is quantized alone (the others stay float) in a simulation of int8 that does not
depend on the runtime: weights symmetric per output channel (int8), each linear's input
asymmetric per tensor (uint8) with its range fixed by a calibration sample (static) or taken
from each batch (dynamic), as ONNX Runtime, OpenVINO and torch's kernels do. The layer's
sensitivity is the mean KL divergence of the model's predicted distribution from the float one
on a validation sample. The most sensitive layers are the ones worth keeping in float.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8, dequantized back to float."""
    scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    return (weight / scale).round().clamp(-127, 127) * scale


def fake_quantize_activation(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Asymmetric per-tensor uint8 over [low, high] (widened to include 0), dequantized back."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-12) / 255.0
    zero = round(-low / scale)
    return ((x / scale).round() + zero).clamp(0, 255).sub(zero).mul(scale)


def linears_under(model: nn.Module, scope: str) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` at or below module path ``scope`` (low-rank factors included)."""
    return [(path, module) for path, module in model.named_modules()
            if isinstance(module, nn.Linear) and (path == scope or path.startswith(f"{scope}."))]


@torch.inference_mode()
def activation_ranges(model: nn.Module, linears: Sequence[tuple[str, nn.Linear]],
                      batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, tuple[float, float]]:
    """Min and max of each linear's input over ``batches`` (the calibration sample)."""
    ranges: dict[str, tuple[float, float]] = {}

    def observer(path: str):
        def hook(module, args):
            x = args[0]
            low, high = float(x.min()), float(x.max())
            old = ranges.get(path, (low, high))
            ranges[path] = (min(old[0], low), max(old[1], high))
        return hook

    handles = [module.register_forward_pre_hook(observer(path)) for path, module in linears]
    try:
        for batch in batches:
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


@contextmanager
def simulated_int8(linears: Sequence[tuple[str, nn.Linear]],
                   ranges: dict[str, tuple[float, float]] | None) -> Iterator[None]:
    """Run ``linears`` in simulated int8 inside the block (static ranges, or per batch when None)."""
    saved = [(module, module.weight.data) for _, module in linears]
    handles = []
    for path, module in linears:
        module.weight.data = fake_quantize_weight(module.weight.data)

        def hook(module, args, path=path):
            x = args[0]
            low, high = ranges[path] if ranges is not None else (float(x.min()), float(x.max()))
            return (fake_quantize_activation(x, low, high), *args[1:])

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, weight in saved:
            module.weight.data = weight


def _outputs(model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(**batch).logits.float() for batch in batches]


def _divergences(quantized: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                 batches: Sequence[dict[str, torch.Tensor]], embeddings: bool = False) -> torch.Tensor:
    """``_divergence`` of every example, batch by batch; of every real (unpadded) token when the
    model has a prediction per token (token classification)."""
    parts = []
    for q, r, batch in zip(quantized, reference, batches, strict=True):
        divergence = _divergence(q, r, embeddings)
        parts.append(divergence[batch["attention_mask"].bool()] if divergence.dim() == 2 else divergence)
    return torch.cat(parts)


def _divergence(quantized: torch.Tensor, reference: torch.Tensor, embeddings: bool = False) -> torch.Tensor:
    """Per example: KL(float || quantized) of the predicted class distributions, the squared error
    of a one-output (regression) model's score, or with ``embeddings`` (a sentence encoder) the
    cosine distance between the two embeddings."""
    if embeddings:
        return 1.0 - torch.nn.functional.cosine_similarity(quantized, reference, dim=-1)
    if reference.shape[-1] == 1:
        return (quantized - reference).pow(2).sum(-1)
    log_q, log_r = torch.log_softmax(quantized, dim=-1), torch.log_softmax(reference, dim=-1)
    return torch.nn.functional.kl_div(log_q, log_r, log_target=True, reduction="none").sum(-1)


def layer_sensitivity(model: nn.Module, layer_scopes: Sequence[str], validation: Sequence[dict[str, torch.Tensor]],
                      calibration: Iterable[dict[str, torch.Tensor]] | None = None) -> list[float]:
    """Per layer: mean KL(float || layer i alone in int8) of the predictions on ``validation`` batches
    (for a regression model, the squared error of its score; for a token classifier, over the tokens;
    for a sentence encoder, the cosine distance of its embeddings).

    With ``calibration`` batches, activations use static ranges observed on them (static int8);
    without, each batch's own range (dynamic int8).
    """
    from autocompress.embedding import SentenceEncoder

    model.eval()
    embeddings = isinstance(model, SentenceEncoder)
    reference = _outputs(model, validation)
    every = [pair for scope in layer_scopes for pair in linears_under(model, scope)]
    ranges = activation_ranges(model, every, calibration) if calibration is not None else None
    scores = []
    for scope in layer_scopes:
        with simulated_int8(linears_under(model, scope), ranges):
            quantized = _outputs(model, validation)
        scores.append(float(_divergences(quantized, reference, validation, embeddings).mean()))
    return scores


def most_sensitive(scores: Sequence[float], count: int) -> tuple[int, ...]:
    """Indices of the ``count`` highest scores (ties: the earlier layer), sorted."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return tuple(sorted(order[:max(0, count)]))
