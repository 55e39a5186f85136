"""The kit's family matrix (``python -m autocompress.testing.matrix``): each technique runs or says why not."""

import subprocess
import sys

from autocompress.plugin_manager import build_host
from autocompress.testing import FAMILIES
from autocompress.testing.matrix import family_matrix, markdown


def test_every_builtin_technique_has_a_cell_for_every_family_and_each_refusal_says_why():
    host = build_host()
    matrix = family_matrix(host)
    assert set(matrix) == {entry.name for entry in host.techniques}
    for technique, row in matrix.items():
        assert list(row) == list(FAMILIES), technique
        if technique != "prompt_tuning":  # soft prompts are for decoder classifiers, checked below
            assert row["bert"] is None, f"{technique} refuses BERT: {row['bert']}"
        for family, reason in row.items():
            assert reason is None or (isinstance(reason, str) and len(reason) > 20), (technique, family, reason)
    # What the adapters cannot give, refused with the part at fault named.
    assert "relative_attention_bias" in matrix["head_pruning"]["mpnet"]
    assert "residual_stream" in matrix["width_pruning"]["modernbert"]
    assert "key/value cache" in matrix["layer_sharing"]["llama"]
    assert "key/value cache" in matrix["layer_sharing"]["gpt2"]
    assert "residual_stream" in matrix["width_pruning"]["gpt2"]
    # GPT-2's Conv1D projections (made nn.Linear by its adapter) and fused c_attn are handled, not refused.
    assert all(matrix[name]["gpt2"] is None for name in ("head_pruning", "ffn_pruning", "layer_drop", "low_rank",
                                                         "lora", "quantization", "distillation"))
    # Soft prompts: every decoder runs them, every encoder refuses them with the reason.
    assert matrix["prompt_tuning"]["llama"] is None and matrix["prompt_tuning"]["gpt2"] is None
    assert all("encoder" in matrix["prompt_tuning"][family] for family in ("bert", "roberta", "modernbert", "mpnet"))
    # ModernBERT's fused linears are handled, not refused.
    assert all(matrix[name]["modernbert"] is None for name in ("head_pruning", "ffn_pruning", "layer_drop", "low_rank"))


def test_the_matrix_prints_as_a_markdown_table():
    text = subprocess.run([sys.executable, "-m", "autocompress.testing.matrix"], capture_output=True, text=True,
                          check=True).stdout
    lines = text.strip().splitlines()
    assert lines[0] == "| technique | " + " | ".join(FAMILIES) + " |"
    assert any(line.startswith("| width_pruning |") and "refused: " in line for line in lines)
    assert markdown({"t": {"bert": None, "mpnet": "because"}}).splitlines()[-1] == "| t | runs | refused: because |"
