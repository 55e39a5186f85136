"""The real default demo, shrunk: real all-MiniLM-L6-v2, real movie-review data, short fine-tuning."""

import json

import pandas as pd
import pytest

from autocompress.cli import main


@pytest.mark.slow
def test_demo_search_on_the_real_model_and_data(tmp_path):
    out = tmp_path / "run"
    args = ["search", "--trials", "4", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--train-limit", "1200", "--teacher-epochs", "1", "--eval-limit", "400", "--repeats", "10",
            "--techniques", "ffn_pruning,quantization", "--max-accuracy-drop", "0.05", "--no-progress"]
    assert main(args) in (0, 5)
    pareto = json.loads((out / "pareto.json").read_text())
    baseline = pareto["baseline"]
    assert baseline["test_accuracy"] > 0.6  # 1,200 sentences, one epoch (~0.68): clearly better than chance (0.5)
    assert baseline["parameters"] > 22_000_000
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials["state"]) <= {"COMPLETE", "FAIL", "PRUNED"}
    int8 = trials[trials["plan"].str.contains("dtype=int8", na=False)]
    for _, row in int8.iterrows():  # int8 really speeds up the real model
        assert row["latency_ms"] < baseline["latency_ms"]
    # The teacher is cached: a second search in another run directory does not fine-tune again.
    teachers = list((tmp_path / "cache" / "teachers").iterdir())
    assert len(teachers) == 1 and (teachers[0] / "teacher.json").is_file()
