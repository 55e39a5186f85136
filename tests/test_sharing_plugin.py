"""The third-party parameter-sharing plugin, installed from examples/autocompress-sharing-plugin, used for real.

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

DISTRIBUTION = "autocompress-sharing-plugin"
TECHNIQUE = "ffn_sharing"

if importlib.util.find_spec("autocompress_sharing_plugin") is None:
    if os.environ.get("AUTOCOMPRESS_REQUIRE_EXAMPLE_PLUGIN"):
        raise RuntimeError("AUTOCOMPRESS_REQUIRE_EXAMPLE_PLUGIN is set but the sharing plugin is not installed: "
                           "pip install ./examples/autocompress-sharing-plugin")
    pytest.skip("sharing plugin not installed (pip install ./examples/autocompress-sharing-plugin)",
                allow_module_level=True)


@pytest.fixture
def autoload(monkeypatch):
    """Entry points on, as for a user (the suite's conftest turns them off)."""
    monkeypatch.delenv("AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD", raising=False)


#: Run in a fresh process: reload, check the ties are real (``is``) and the saved file holds one copy.
RELOAD = """
import json, sys
from pathlib import Path
import autocompress
from autocompress.measure import model_bytes, parameter_count

directory = Path(sys.argv[1])
model, tokenizer = autocompress.load_pretrained(directory)
layers = model.bert.encoder.layer
shared = [(i, j) for i in range(len(layers)) for j in range(i + 1, len(layers))
          if layers[j].intermediate.dense is layers[i].intermediate.dense]
assert all(layers[j].output.dense is layers[i].output.dense for i, j in shared)
unshared = sum(p.numel() for layer in layers for p in layer.parameters()) + sum(
    p.numel() for name, p in model.named_parameters() if ".layer." not in name)
batch = tokenizer(["the film was good", "a dull boring plot"], return_tensors="pt", padding=True)
print(json.dumps({"shared": shared, "parameters": parameter_count(model), "per_layer_sum": unshared,
                  "bytes": model_bytes(model), "file": (directory / "model.safetensors").stat().st_size,
                  "logits": model(**batch).logits.tolist()}))
"""


def test_a_search_with_the_sharing_plugin_reloads_its_best_model_with_the_ties(tmp_path, autoload):
    task = write_tiny_task(tmp_path / "task", 300, seed=5)
    starting = tmp_path / "start.yaml"  # the first trial shares FFNs, whatever the sampler draws after it
    starting.write_text(f"- {TECHNIQUE}: {{group_size: 2}}\n")
    out = tmp_path / "run"
    code = main(["search", "--model", str(task / "model"), "--data", str(task / "data.csv"), "--trials", "4",
                 "--out", str(out), "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.3",
                 "--seed", "3", "--sampler", "random", "--techniques", TECHNIQUE, "--starting-points", str(starting)])
    assert code == 0
    trials = pd.read_csv(out / "trials.csv")
    assert f"param.{TECHNIQUE}.group_size" in trials.columns
    used = trials[trials[f"param.use.{TECHNIQUE}"] & (trials["state"] == "COMPLETE")]
    assert len(used) >= 1
    plain = trials[~trials[f"param.use.{TECHNIQUE}"] & (trials["state"] == "COMPLETE")]
    if len(plain):  # the tiny teacher has 2 layers: a group of 2 shares one of its 2 FFNs
        assert used["parameters"].max() < plain["parameters"].min()

    # Its best model: best/ when the recommended plan shared FFNs, else its most accurate saved candidate.
    best = out / "best"
    plan = json.loads((best / "autocompress.json").read_text())["plan"] if best.is_dir() else []
    if not any(step["technique"] == TECHNIQUE for step in plan):
        saved = [n for n in used.sort_values("val_accuracy", ascending=False)["number"]
                 if (out / "candidates" / f"trial-{int(n):05d}" / "autocompress.json").is_file()]
        assert saved, "no candidate that shared FFNs was kept"
        best = out / "candidates" / f"trial-{int(saved[0]):05d}"
    manifest = json.loads((best / "autocompress.json").read_text())
    assert [s["technique"] for s in manifest["structure"]["steps"]] == [TECHNIQUE]
    assert manifest["ties"]  # the shared tensors, recorded once each
    env = {k: v for k, v in os.environ.items() if k != "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD"}
    runs = [json.loads(output) for output in fresh_process_outputs(RELOAD, best, env=env)]
    reloaded = runs[0]
    assert reloaded["shared"] == [[0, 1]]  # layers 0 and 1 run one FFN: the very same modules
    assert reloaded["parameters"] < reloaded["per_layer_sum"]  # counted once, not once per layer
    assert 0 <= reloaded["file"] - reloaded["bytes"] < 64 * 1024  # and stored once
    assert runs[0]["logits"] == runs[1]["logits"]
    teacher_file = (task / "model" / "model.safetensors").stat().st_size
    assert reloaded["file"] < teacher_file


def test_plugins_lists_the_sharing_technique_with_its_distribution():
    env = {k: v for k, v in os.environ.items() if k != "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD"}
    listing = json.loads(subprocess.run([sys.executable, "-m", "autocompress.cli", "plugins", "--json"],
                                        capture_output=True, text=True, env=env, check=True).stdout)
    [row] = [r for r in listing["registered"] if r["name"] == TECHNIQUE]
    assert row["distribution"] == f"{DISTRIBUTION} {version(DISTRIBUTION)}"
    assert not listing["broken"]
