"""A tiny end-to-end search through the CLI: outputs, resume, reload of best/, failure isolation."""

import gc
import json
from dataclasses import dataclass

import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution

from autocompress import hookimpl
from autocompress.cli import main
from autocompress.config import settings_from_options
from autocompress.plugin_manager import build_host
from autocompress.search import run_search
from autocompress.technique import Stage, Technique
from autocompress.testing import fresh_process_outputs, write_tiny_task


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 300, seed=5, text_column="sentence", label_column="polarity", filename="reviews.csv")
    return root


def _args(tiny_task, out, trials):
    return ["search", "--model", str(tiny_task / "model"), "--data", str(tiny_task / "reviews.csv"),
            "--text-column", "sentence", "--label-column", "polarity", "--trials", str(trials),
            "--out", str(out), "--repeats", "5", "--warmup", "1", "--no-progress",
            "--max-accuracy-drop", "0.2", "--seed", "3"]


def test_tiny_search_writes_every_output_and_resumes(tiny_task, tmp_path):
    out = tmp_path / "run"
    assert main(_args(tiny_task, out, 5)) == 0
    for name in ("study.db", "trials.csv", "pareto.json", "run.json", "best/model.safetensors",
                 "best/autocompress.json", "best/tokenizer.json"):
        assert (out / name).exists(), name
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2, 3, 4]
    for column in ("state", "plan", "test_accuracy", "val_accuracy", "latency_ms", "memory_mb", "feasible", "reason"):
        assert column in trials.columns
    pareto = json.loads((out / "pareto.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert pareto["baseline"]["test_accuracy"] == run["baseline"]["test_accuracy"] > 0.8
    assert pareto["front"] and all(row["feasible"] for row in pareto["front"])
    assert set(pareto["front"][0]) >= {"trial", "params", "test_accuracy", "val_accuracy", "latency_ms", "memory_mb",
                                       "feasible"}
    assert pareto["recommended"] in {row["trial"] for row in pareto["front"]}
    assert run["seed"] == 3 and run["machine"]["threads"] == 2

    # The same command again: nothing is redone.
    finished = trials[["number", "plan", "latency_ms"]]
    assert main(_args(tiny_task, out, 5)) == 0
    again = pd.read_csv(out / "trials.csv")
    pd.testing.assert_frame_equal(again[["number", "plan", "latency_ms"]], finished)
    # A bigger budget continues the same study.
    assert main(_args(tiny_task, out, 7)) == 0
    assert list(pd.read_csv(out / "trials.csv")["number"]) == list(range(7))


def test_best_reloads_in_a_fresh_process_with_the_same_predictions(tiny_task, tmp_path):
    out = tmp_path / "run"
    assert main(_args(tiny_task, out, 4)) == 0
    script = (
        "import sys, json, torch, autocompress\n"
        "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
        "batch = tok(['the film was good', 'a dull boring plot'], return_tensors='pt', padding=True)\n"
        "print(json.dumps(model(**batch).logits.argmax(-1).tolist()))\n"
    )
    fresh = [json.loads(output) for output in fresh_process_outputs(script, out / "best")]
    assert fresh[0] == fresh[1] == [1, 0]


@dataclass(frozen=True)
class _ExplodingConfig:
    explode: bool = False


class Exploding(Technique):
    name = "exploding"
    stage = Stage.STRUCTURE
    Config = _ExplodingConfig

    @classmethod
    def search_space(cls):
        return {"explode": CategoricalDistribution([True])}

    def apply(self, model, config, context):
        if config.explode:
            raise RuntimeError("kaboom")
        return model


class ExplodingPlugin:
    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(Exploding)


def test_hook_autocompress_register_techniques_a_failing_technique_fails_its_trial_and_the_search_goes_on(
        tiny_task, tmp_path):
    options = {"model": tiny_task / "model", "data": tiny_task / "reviews.csv", "text_column": "sentence",
               "label_column": "polarity", "trials": 8, "out": tmp_path / "run", "repeats": 3, "warmup": 1,
               "no_progress": True, "techniques": ["exploding", "quantization"], "sampler": "random"}
    host = build_host(autoload=False, extra_plugins=[("exploding-plugin", ExplodingPlugin())])
    outcome = run_search(settings_from_options(options), host)
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    failed = trials[trials["state"] == "FAIL"]
    assert outcome.trials == 8 and len(failed) >= 1
    assert all("exploding" in reason and "kaboom" in reason for reason in failed["reason"])
    assert (trials["state"] == "COMPLETE").any()


def test_conflicting_techniques_are_one_choice_and_never_sampled_together():
    import optuna

    from autocompress.search.sampling import conflict_groups, sample_plan

    host = build_host(autoload=False)
    techniques = [entry.cls for entry in host.techniques]
    groups = {tuple(c.name for c in g) for g in conflict_groups(techniques)}
    assert ("distillation", "lora") in groups
    spaces = {cls.name: cls.search_space() for cls in techniques}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        names = {step.technique.name for step in sample_plan(trial, techniques, spaces).steps}
        assert not {"distillation", "lora"} <= names
        seen |= names & {"distillation", "lora"}
        study.tell(trial, 0.0)
    assert seen == {"distillation", "lora"}


@dataclass(frozen=True)
class _SleepyConfig:
    seconds: float = 5.0


class Sleepy(Technique):
    name = "sleepy"
    stage = Stage.STRUCTURE
    Config = _SleepyConfig

    @classmethod
    def search_space(cls):
        return {"seconds": CategoricalDistribution([5.0])}

    def apply(self, model, config, context):
        import time

        time.sleep(config.seconds)
        return model


class SleepyPlugin:
    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(Sleepy)


def test_a_trial_past_the_time_limit_fails_with_that_reason_and_the_search_goes_on(tiny_task, tmp_path):
    options = {"model": tiny_task / "model", "data": tiny_task / "reviews.csv", "text_column": "sentence",
               "label_column": "polarity", "trials": 4, "out": tmp_path / "run", "repeats": 3, "warmup": 1,
               "no_progress": True, "techniques": ["sleepy", "quantization"], "sampler": "random",
               "trial_timeout": 0.5, "seed": 1, "starting_points": "none"}
    host = build_host(autoload=False, extra_plugins=[("sleepy-plugin", SleepyPlugin())])
    run_search(settings_from_options(options), host)
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    slow = trials[trials["param.use.sleepy"]]
    assert len(slow) >= 1 and (slow["state"] == "FAIL").all()
    assert slow["reason"].str.contains("per-trial time limit of 0.5 s").all()
    assert len(trials) == 4


class FreezeProbe:
    """Records, after every trial, how many objects the garbage collector skips."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def autocompress_trial_finished(self, trial_number, outcome, run_dir):
        self.seen.append(gc.get_freeze_count())


def test_trials_collect_only_their_own_garbage_and_the_search_unfreezes_afterwards(tiny_task, tmp_path):
    """Host overhead: the per-trial gc pass skips the objects alive before the trials (torch,
    the task, the teacher), and those are handed back to the collector when the search ends."""
    gc.unfreeze()
    probe = FreezeProbe()
    options = {"model": tiny_task / "model", "data": tiny_task / "reviews.csv", "text_column": "sentence",
               "label_column": "polarity", "trials": 3, "out": tmp_path / "run", "repeats": 3, "warmup": 1,
               "no_progress": True, "techniques": ["quantization"], "starting_points": "none"}
    run_search(settings_from_options(options), build_host(autoload=False, extra_plugins=[("probe", probe)]))
    assert len(probe.seen) == 3 and min(probe.seen) > 100_000  # torch and transformers alone are more
    assert gc.get_freeze_count() == 0
