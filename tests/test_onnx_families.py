"""Every model family exports to ONNX and runs under ONNX Runtime with PyTorch's logits (the onnxruntime
target, the static int8 route and ``autocompress export --onnx`` all start from this export)."""

import numpy as np
import pytest
import torch

from autocompress.testing import FAMILIES, tiny_model, varied_inputs

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("family", [*FAMILIES, "deberta-v2-unshared", "qwen3"])
def test_each_family_exports_to_onnx_with_the_same_logits(family, tmp_path):
    from autocompress.onnx_export import export_onnx, onnx_logits

    model = tiny_model(family)
    inputs = varied_inputs(128)  # rows of different lengths, padded: masks and (decoders) last-token pooling
    path = export_onnx(model, tmp_path / "model.onnx", seq_len=16)
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    assert np.abs(onnx_logits(path, inputs) - expected).max() < 1e-4
    if family in ("llama", "qwen3"):  # exported without its key/value cache output; the config left as it was
        assert model.config.use_cache is True
