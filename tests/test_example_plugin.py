"""The example third-party plugin, installed from examples/autocompress-example-plugin, used for real.

CI installs it (``.ci/run``) and sets AUTOCOMPRESS_REQUIRE_EXAMPLE_PLUGIN=1, so there these tests
cannot skip; elsewhere they skip only when the plugin is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.testing import fresh_process_outputs, write_tiny_task

DISTRIBUTION = "autocompress-example-plugin"
TECHNIQUE = "embedding_factorization"

if importlib.util.find_spec("autocompress_example_plugin") is None:
    if os.environ.get("AUTOCOMPRESS_REQUIRE_EXAMPLE_PLUGIN"):
        raise RuntimeError("AUTOCOMPRESS_REQUIRE_EXAMPLE_PLUGIN is set but the example plugin is not installed: "
                           "pip install ./examples/autocompress-example-plugin")
    pytest.skip("example plugin not installed (pip install ./examples/autocompress-example-plugin)",
                allow_module_level=True)


@pytest.fixture
def autoload(monkeypatch):
    """Entry points on, as for a user (the suite's conftest turns them off)."""
    monkeypatch.delenv("AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def test_plugins_lists_the_example_technique_with_its_distribution():
    env = {k: v for k, v in os.environ.items() if k != "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD"}
    result = subprocess.run([sys.executable, "-m", "autocompress.cli", "plugins", "--json"],
                            capture_output=True, text=True, env=env, check=True)
    listing = json.loads(result.stdout)
    [row] = [r for r in listing["registered"] if r["name"] == TECHNIQUE]
    assert row["kind"] == "technique" and row["plugin"] == TECHNIQUE
    assert row["distribution"] == f"{DISTRIBUTION} {version(DISTRIBUTION)}"
    [plugin] = [p for p in listing["plugins"] if p["plugin"] == TECHNIQUE]
    assert plugin["api"] == ">=1.3,<2" and plugin["error"] is None
    assert not listing["broken"]
    text = subprocess.run([sys.executable, "-m", "autocompress.cli", "plugins"], capture_output=True, text=True,
                          env=env, check=True).stdout
    assert any(TECHNIQUE in line and DISTRIBUTION in line for line in text.splitlines())


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 300, seed=5, text_column="sentence", label_column="polarity", filename="reviews.csv")
    # A vocabulary far larger than the text uses (as a multilingual base has): 4,096 rows, the 3,968 the
    # tokenizer never produces set to zero. The embedding table is then 1 MB of the model's 1.4 MB, so
    # what the technique saves (>= 0.35 MB at any sampled rank) stands far above the noise of the
    # activation memory (a few hundredths of a MB here); with the 128 rows alone it saved 0.02 MB and a
    # search once recommended the uncompressed model as the smallest.
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(root / "model")
    used = model.config.vocab_size
    model.resize_token_embeddings(4096, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[used:] = 0
    model.save_pretrained(root / "model", safe_serialization=True)
    return root


def test_a_short_search_uses_the_example_technique(tiny_task, tmp_path, autoload):
    out = tmp_path / "run"
    # Two fixed first trials, so what is compared below always exists: the model as it is, and the
    # example technique alone at its smallest rank (then three trials of the sampler's choosing).
    starting = tmp_path / "starting.yaml"
    starting.write_text(f"- {{}}\n- {TECHNIQUE}: {{rank_ratio: 0.1}}\n")
    code = main(["search", "--model", str(tiny_task / "model"), "--data", str(tiny_task / "reviews.csv"),
                 "--text-column", "sentence", "--label-column", "polarity", "--trials", "5", "--out", str(out),
                 "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.3", "--seed", "4",
                 "--sampler", "random", "--techniques", TECHNIQUE, "--starting-points", str(starting),
                 "--prefer", "memory"])
    assert code == 0
    trials = pd.read_csv(out / "trials.csv")
    assert f"param.use.{TECHNIQUE}" in trials.columns and f"param.{TECHNIQUE}.rank_ratio" in trials.columns
    used = trials[trials[f"param.use.{TECHNIQUE}"]]
    plain = trials[~trials[f"param.use.{TECHNIQUE}"]]
    assert len(used) >= 1 and len(plain) >= 1, trials[["number", "plan"]]
    assert (used["state"] == "COMPLETE").all()
    assert used[f"param.{TECHNIQUE}.rank_ratio"].between(0.1, 0.6).all()
    assert used["plan"].str.contains(TECHNIQUE).all()
    # The model has V = 4096, H = 64: every sampled rank (<= 40) removes embedding weights.
    assert used["parameters"].max() < plain["parameters"].min()

    # The smallest model (the recommendation, --prefer memory) is one the technique made; it reloads
    # in a fresh process with its factorised embeddings and the same predictions each time.
    best = json.loads((out / "pareto.json").read_text())["recommended"]
    assert best in set(used["number"]), (best, trials[["number", "plan", "memory_mb"]])
    script = ("import sys, json, autocompress\n"
              "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
              "assert type(model.get_input_embeddings()).__name__ == 'FactorizedEmbedding'\n"
              "batch = tok(['the film was good', 'a dull boring plot'], return_tensors='pt', padding=True)\n"
              "print(json.dumps(model(**batch).logits.tolist()))\n")
    runs = fresh_process_outputs(script, out / "best")
    assert runs[0] == runs[1]
