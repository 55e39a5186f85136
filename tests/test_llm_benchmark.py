"""benchmarks/llm_techniques.py --quick: every LLM technique alone, measured, on a tiny Llama."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_llm_techniques_quick_prints_every_variant_with_real_changes(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "llm_techniques.py"), "--quick", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["variant"]: row for row in json.loads((tmp_path / "llm_techniques.json").read_text())}
    assert all(f"| {name} |" in result.stdout for name in rows)
    # int4 weight-only (torchao: in dev, so the README's set-up installs it) at two group sizes
    assert len(rows) == 13
    for group in (64, 32):
        assert rows[f"int4 weight-only (torchao, group {group}, bf16 activations)"]["memory_x"] > 1.8
    for name, row in rows.items():
        assert row["ttft_ms"] > 0 and row["ms_per_token"] > 0 and row["perplexity"] > 1, name
    # Structure changes really shrink what is stored (weights + KV cache), and int8/bf16 halve or better.
    for name in ("half the layers (every other)", "gated MLP channels 50% (L1)", "1/3 of key/value groups (L1)"):
        assert rows[name]["memory_x"] > 1.1, (name, rows[name]["memory_x"])
    assert rows["bf16"]["memory_x"] > 1.8 and rows["half the layers + int8"]["memory_x"] > 3
    assert rows["teacher fp32"]["memory_x"] == 1
    # The byte-level BPE vocabulary cut to the training prompts' tokens: a smaller table (tied head too).
    trimmed = rows["vocabulary of the training prompts"]
    assert trimmed["vocabulary"] < rows["teacher fp32"]["vocabulary"] and trimmed["memory_x"] > 1.0
