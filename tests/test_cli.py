"""The command line: bad input is refused in seconds with exit code 2 and a message naming the culprit."""

import subprocess
import sys

import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.testing import synthetic_sentiment, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    model = tiny_model("bert", num_labels=2)
    model.save_pretrained(root / "model", safe_serialization=True)
    tiny_tokenizer(root / "model")
    texts, labels = synthetic_sentiment(60)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "data.csv", index=False)
    pd.DataFrame({"text": texts, "label": [i % 3 for i in range(60)]}).to_csv(root / "three.csv", index=False)
    return root


def _search(task, tmp_path, *extra):
    return ["search", "--model", str(task / "model"), "--data", str(task / "data.csv"),
            "--out", str(tmp_path / "run"), "--no-progress", *extra]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-latency-ms", "-3"], "--max-latency-ms must be greater than 0"),
        (["--max-memory-mb", "0"], "--max-memory-mb must be greater than 0"),
        (["--max-accuracy-drop", "1.5"], "--max-accuracy-drop must be a fraction"),
        (["--trials", "0"], "--trials must be a whole number >= 1"),
        (["--techniques", "pruning"], "unknown technique(s) pruning (valid: distillation, ffn_pruning"),
        (["--sampler", "grid"], "--sampler must be one of tpe, nsga2, random"),
        (["--target", "tpu"], "unknown target 'tpu' (valid: cpu, onnxruntime, openvino)"),
        (["--free-floor", "cpu,tpu"], "--free-floor: unknown target(s) tpu (valid: cpu, onnxruntime, openvino"),
        (["--storage", "not-a-url"], "is not a database URL"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(task, tmp_path, capsys, extra, message):
    assert main(_search(task, tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err


def test_model_and_data_problems_are_named(task, tmp_path, capsys):
    assert main(_search(task, tmp_path, "--model", str(tmp_path / "missing"))) == 2
    assert "directory not found" in capsys.readouterr().err
    assert main(["search", "--model", str(task / "model"), "--data", str(task / "three.csv"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "has 2 labels but --data" in capsys.readouterr().err
    assert main(_search(task, tmp_path, "--label-column", "stars")) == 2
    assert "column 'stars' not found (columns: text, label)" in capsys.readouterr().err


def test_pickle_weights_are_refused_unless_allowed(task, tmp_path, capsys):
    import shutil

    import torch

    pickled = tmp_path / "pickled"
    shutil.copytree(task / "model", pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(tiny_model("bert").state_dict(), pickled / "pytorch_model.bin")
    assert main(_search(task, tmp_path, "--model", str(pickled))) == 2
    error = capsys.readouterr().err
    assert "pickle format" in error and "--allow-pickle" in error


def test_config_file_is_validated_and_merged(task, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("max_latency_ms: fast\n")
    assert main(["search", "--config", str(config)]) == 2
    assert "'max_latency_ms' must be a number" in capsys.readouterr().err
    config.write_text("max_latencyms: 3\n")
    assert main(["search", "--config", str(config)]) == 2
    assert "unknown option 'max_latencyms'" in capsys.readouterr().err
    config.write_text(f"model: {task / 'model'}\ndata: {task / 'data.csv'}\ntechniques: [nope]\n")
    assert main(["search", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "unknown technique(s) nope" in capsys.readouterr().err


def test_help_is_instant_and_does_not_import_torch():
    code = ("import sys, autocompress.cli as c\ntry: c.main(['--help'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False")
    assert "search" in result.stdout
