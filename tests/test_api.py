"""The Python API: ``autocompress.compress`` runs the command line's search and returns its results;
classes and callbacks passed in the call; the CLI and the API agree trial for trial."""

import json

import datasets
import pandas as pd
import pytest
import torch
from api_plugins import LastLayerFfnPruning, SingleThreadCpu

import autocompress
from autocompress.api import build_api_host
from autocompress.cli import main
from autocompress.data import load_task_data
from autocompress.testing import synthetic_sentiment, write_tiny_checkpoint, write_tiny_task

#: Both trials of the module's run try per-layer FFN pruning, so whichever is kept has per-layer shapes.
START = ("- last_layer_ffn_pruning: {keep_fraction: 0.5}\n  quantization: {dtype: int8}\n"
         "- last_layer_ffn_pruning: {keep_fraction: 0.5}\n")


def _dataset_dict(n: int, seed: int) -> datasets.DatasetDict:
    texts, labels = synthetic_sentiment(n, seed=seed)
    cut = [0, int(0.7 * n), int(0.85 * n), n]
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict({"sentence": texts[a:b], "polarity": labels[a:b]})
        for name, a, b in zip(("train", "validation", "test"), cut[:-1], cut[1:], strict=True)})


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """A 2-trial search from Python: a DatasetDict object, a technique and a target class defined in user code
    (tests/api_plugins.py), a callback; trial 0 is the starting point (last-layer FFN pruning + int8)."""
    root = tmp_path_factory.mktemp("api")
    write_tiny_checkpoint(root / "model")
    (root / "start.yaml").write_text(START)
    data = _dataset_dict(240, seed=7)
    seen = []

    def fails_on_the_first_trial(trial):
        if trial.number == 0:
            raise ValueError("a callback with a bug")

    result = autocompress.compress(
        root / "model", data, techniques=[LastLayerFfnPruning, "quantization"], target=SingleThreadCpu,
        callbacks=[fails_on_the_first_trial, seen.append], trials=2, out=root / "run", cache_dir=root / "cache",
        starting_points=root / "start.yaml", text_column="sentence", label_column="polarity",
        repeats=3, warmup=1, max_accuracy_drop=0.5, seed=1)
    return root, data, result, seen


def test_compress_returns_the_front_the_recommended_model_the_baseline_and_the_study(api_run):
    root, _, result, _ = api_run
    pareto = json.loads((root / "run" / "pareto.json").read_text())
    assert result.run_dir == root / "run" and result.report_html.is_file() and result.report_markdown.is_file()
    assert result.document == pareto
    assert isinstance(result.front, pd.DataFrame)
    assert list(result.front["number"]) == [row["trial"] for row in pareto["front"]]
    assert result.study.study_name == "local-search" and len(result.study.trials) >= 2
    assert result.baseline.test_accuracy == pareto["baseline"]["test_accuracy"] > 0.8
    assert result.baseline.teacher_training is None  # the checkpoint was a classifier already
    best = result.recommended
    assert result.found and best.trial == pareto["recommended"]
    assert best.test_accuracy == float(result.trials.set_index("number").loc[best.trial, "test_accuracy"])
    model, tokenizer = best.load()
    logits = model(**tokenizer(["the film was good", "a dull boring plot"], return_tensors="pt",
                               padding=True)).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert [c.trial for c in result.candidates] == list(result.front["number"])
    with pytest.raises(autocompress.InputError, match="no trial 99"):
        result.candidate(99)


def test_callbacks_receive_every_finished_trial_and_one_that_raises_stops_nothing(api_run):
    _, _, result, seen = api_run
    assert [t.number for t in seen] == [0, 1]
    assert list(result.trials["ended"][:2]) == ["complete", "complete"]
    first = seen[0]
    # The starting point's post step is the one the probe found fastest here (none, on some CPUs).
    assert first.plan.startswith("last_layer_ffn_pruning(keep_fraction=0.5)")
    assert first.ended == "complete" and first.latency_ms > 0 and first.test_accuracy is not None
    assert first.row["number"] == 0 and isinstance(first.params, dict)


def test_technique_and_target_classes_in_the_call_are_registered_in_code(api_run):
    root, _, result, _ = api_run
    run = json.loads((root / "run" / "run.json").read_text())
    assert run["target"] == "cpu-1thread"
    assert "--techniques last_layer_ffn_pruning,quantization" in " ".join(run["command"])
    host = build_api_host((), [LastLayerFfnPruning], [SingleThreadCpu], callbacks=False, isolate=False)
    for registry, name in ((host.techniques, "last_layer_ffn_pruning"), (host.targets, "cpu-1thread")):
        assert registry.entry(name).provenance.distribution == "registered in code"
    # The last layer's FFN is narrower than the others: per-layer shapes.
    assert result.recommended.plan.startswith("last_layer_ffn_pruning")
    model, _ = result.recommended.load()
    weights = [layer.intermediate.dense.weight for layer in model.bert.encoder.layer]
    widths = [(w() if callable(w) else w).shape[0] for w in weights]  # int8 or not, as the probe chose
    assert widths == [128, 64]


def test_dataset_objects_are_saved_by_content_and_their_own_splits_used(api_run):
    root, data, _, _ = api_run
    saved = json.loads((root / "run" / "run.json").read_text())["task_info"]["dataset"]
    assert saved.startswith(str(root / "cache" / "data"))
    task = load_task_data(saved, "sentence", "polarity")
    assert task.test.texts == data["test"]["sentence"] and task.validation.texts == data["validation"]["sentence"]
    from autocompress.hf_data import save_for_search

    assert str(save_for_search(data, root / "cache")) == saved  # same content, same path: the same study resumes


def test_open_run_reads_the_stored_result_and_compress_resumes_the_study(api_run):
    root, data, result, _ = api_run
    opened = autocompress.open_run(root / "run")
    pd.testing.assert_frame_equal(opened.front, result.front)
    assert opened.recommended.trial == result.recommended.trial and opened.baseline == result.baseline
    more = autocompress.compress(
        root / "model", data, techniques=[LastLayerFfnPruning, "quantization"], target=SingleThreadCpu,
        trials=3, out=root / "run", cache_dir=root / "cache", starting_points=root / "start.yaml",
        text_column="sentence", label_column="polarity", repeats=3, warmup=1, max_accuracy_drop=0.5, seed=1)
    counted = more.trials[more.trials["ended"] != "waiting"]
    assert list(counted["number"])[:3] == [0, 1, 2]
    assert more.trials.set_index("number").loc[0, "plan"] == result.trials.set_index("number").loc[0, "plan"]


def test_bad_calls_are_refused_before_any_work(tmp_path):
    with pytest.raises(autocompress.InputError, match="unknown option 'trails' \\(did you mean 'trials'"):
        autocompress.compress(tmp_path / "m", tmp_path / "d.csv", trails=3)
    with pytest.raises(autocompress.InputError, match="pass progress= instead of no_progress="):
        autocompress.compress(no_progress=True)
    with pytest.raises(autocompress.InputError, match="'trials' must be a whole number"):
        autocompress.compress(tmp_path / "m", tmp_path / "d.csv", trials="many")
    with pytest.raises(autocompress.InputError, match="technique 42 is neither a registered technique's name"):
        autocompress.compress(techniques=[42])


def test_isolate_refuses_a_class_a_child_process_cannot_import(tmp_path):
    write_tiny_task(tmp_path, 60)

    class Local(LastLayerFfnPruning):
        name = "local_ffn"

    with pytest.raises(autocompress.InputError, match="technique class .*Local cannot be loaded by a trial's child "
                       "process: it is defined inside a function"):
        autocompress.compress(tmp_path / "model", tmp_path / "data.csv", techniques=[Local], isolate=True,
                              out=tmp_path / "run")


@pytest.mark.slow
def test_isolated_trials_rebuild_classes_registered_in_code(tmp_path):
    write_tiny_task(tmp_path, 120)
    (tmp_path / "start.yaml").write_text(START)
    result = autocompress.compress(
        tmp_path / "model", tmp_path / "data.csv", techniques=[LastLayerFfnPruning, "quantization"],
        target=SingleThreadCpu, isolate=True, trials=1, out=tmp_path / "run",
        starting_points=str(tmp_path / "start.yaml"), repeats=3, warmup=1, max_accuracy_drop=0.5)
    assert result.trials.loc[0, "ended"] == "complete", result.trials.loc[0, "reason"]
    assert result.trials.loc[0, "plan"].startswith("last_layer_ffn_pruning")


#: Measured on this machine as it runs (time, resident memory), so they differ between two runs.
MEASURED = ["latency_ms", "latency_p90_ms", "speedup", "teacher_latency_ms", "memory_mb", "activation_mb",
            "duration_s", "work_s"]


def _deterministic(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in MEASURED}


def test_the_cli_and_the_api_give_identical_trials_and_pareto_for_the_same_seed_and_options(tmp_path):
    """Everything deterministic is compared: plans, params, states, how trials ended, accuracies, sizes, the
    number of trials. Latency and memory are measured (noisy), so their columns are left out, and there are no
    latency/memory limits, so feasibility does not depend on timing. Which feasible trials are Pareto-optimal
    (and recommended) does depend on the measured latency and memory, so the two fronts are compared entry by
    entry on the trials they share, each entry's deterministic fields against the other run's."""
    write_tiny_task(tmp_path, 300, seed=5)
    common = dict(trials=3, seed=4, techniques="ffn_pruning,layer_drop,distillation,quantization",
                  starting_points="none", repeats="3", warmup="1", max_accuracy_drop="0.3")
    cli = ["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data.csv"),
           "--out", str(tmp_path / "cli"), "--no-progress"]
    for name, value in common.items():
        cli += [f"--{name.replace('_', '-')}", str(value)]
    assert main(cli) == 0
    autocompress.compress(str(tmp_path / "model"), str(tmp_path / "data.csv"), out=tmp_path / "api",
                          **{k: (v.split(",") if k == "techniques" else v) for k, v in common.items()})

    cli_trials, api_trials = (pd.read_csv(tmp_path / run / "trials.csv") for run in ("cli", "api"))
    assert len(cli_trials) == 3
    pd.testing.assert_frame_equal(cli_trials.drop(columns=MEASURED), api_trials.drop(columns=MEASURED))

    cli_doc, api_doc = (json.loads((tmp_path / run / "pareto.json").read_text()) for run in ("cli", "api"))
    assert set(cli_doc) == set(api_doc) and cli_doc["limits"] == api_doc["limits"]
    assert _deterministic(cli_doc["baseline"]) == _deterministic(api_doc["baseline"])
    assert cli_doc["front"] and api_doc["front"]
    for doc, other in ((cli_doc, api_trials), (api_doc, cli_trials)):
        for entry in doc["front"]:
            row = other.set_index("number").loc[entry["trial"]]
            assert entry["plan"] == row["plan"] and entry["test_accuracy"] == row["test_accuracy"]
            assert entry["val_accuracy"] == row["val_accuracy"] and entry["parameters"] == row["parameters"]
            assert entry["params"] == {k[6:]: v for k, v in row.items() if k.startswith("param.") and pd.notna(v)}
