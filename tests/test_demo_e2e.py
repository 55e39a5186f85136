"""The real default demo, shrunk: real all-MiniLM-L6-v2, real movie-review data, short fine-tuning."""

import json

import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.testing.smoke import smoke_demo_flags


@pytest.mark.slow
def test_demo_search_on_the_real_model_and_data(tmp_path, smoke_demo_task, monkeypatch):
    # The session's smoke teacher is cached (conftest.py): this search must reuse it, not fine-tune again.
    def no_fine_tuning(*args, **kwargs):
        raise AssertionError("the cached smoke teacher was fine-tuned again")

    monkeypatch.setattr("autocompress.training.fine_tune", no_fine_tuning)
    out = tmp_path / "run"
    # Trial 0 is the starting point int8 alone (a file of one's own is tried as written): an int8
    # candidate is always measured. Trial 1 is the sampler's own choice.
    (tmp_path / "start.yaml").write_text("- quantization: {dtype: int8}\n")
    args = ["search", "--trials", "2", "--out", str(out), *smoke_demo_flags(), "--eval-limit", "400",
            "--starting-points", str(tmp_path / "start.yaml"),
            "--repeats", "10", "--techniques", "ffn_pruning,quantization", "--max-accuracy-drop", "0.05",
            "--no-progress"]
    code = main(args)
    assert code in (0, 5)
    pareto = json.loads((out / "pareto.json").read_text())
    assert (code == 0) == (pareto["recommended"] is not None)  # 5: nothing met the limits, and it says so
    baseline = pareto["baseline"]
    assert baseline["test_accuracy"] > 0.6  # 1,200 sentences, one epoch (~0.68): clearly better than chance (0.5)
    assert baseline["parameters"] > 22_000_000
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and set(trials["state"]) <= {"COMPLETE", "FAIL", "PRUNED"}
    int8 = trials[trials["plan"].str.contains("dtype=int8", na=False)]
    assert len(int8) >= 1, trials["plan"].tolist()
    # int8 really speeds up the real model, against the teacher measured right before it.
    assert (int8["speedup"] > 1).all(), int8[["plan", "latency_ms", "teacher_latency_ms", "speedup"]]
