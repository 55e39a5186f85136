"""Which techniques a search runs: support is asked of the model and its tokenizer; the default search
leaves out a technique that cannot run with a one-line notice, a technique the user named is an error."""

import json
from dataclasses import dataclass

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution

from autocompress import hookimpl
from autocompress.arch import adapter_for
from autocompress.cli import main
from autocompress.config import settings_from_options
from autocompress.errors import InputError
from autocompress.plugin_manager import build_host
from autocompress.search import run_search
from autocompress.search.environment import LeftOut, supported_techniques
from autocompress.search.starting_points import ENQUEUED, default_file, load_starting_points, without_techniques
from autocompress.study.record import REFERENCES
from autocompress.technique import ModelAndTokenizer, Stage, Technique
from autocompress.testing import (
    synthetic_sentiment,
    tiny_model,
    tiny_tokenizer,
    tiny_unigram_tokenizer,
)

UNIGRAM_REASON = ("vocab_trim supports WordPiece and byte-level BPE tokenizers only; TokenizersBackend uses a "
                  "Unigram model")


@dataclass(frozen=True)
class _Config:
    on: bool = True


class AdapterOnly(Technique):
    """Written before ``unsupported_reason_for``: refuses by the adapter alone."""

    name = "adapter_only"
    stage = Stage.STRUCTURE
    Config = _Config

    @classmethod
    def search_space(cls):
        return {"on": CategoricalDistribution([True])}

    @classmethod
    def unsupported_reason(cls, adapter):
        return "no roberta here" if adapter.model.config.model_type == "roberta" else None

    def apply(self, model, config, context):
        return model


class ShyOfRoberta(AdapterOnly):
    """Offers a by-hand reference, and refuses RoBERTa-layout models."""

    name = "shy_of_roberta"
    references = {"shy alone": {"on": True}}


class ShyPlugin:
    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(ShyOfRoberta)


def _model(family, tokenizer):
    return ModelAndTokenizer(adapter_for(tiny_model(family), build_host(autoload=False).architectures), tokenizer)


def test_the_default_search_leaves_out_what_cannot_run_and_says_why():
    host = build_host(autoload=False)
    techniques = [host.techniques["vocab_trim"], host.techniques["quantization"], AdapterOnly]
    kept, left_out = supported_techniques(techniques, _model("roberta", tiny_unigram_tokenizer()), named=False)
    assert [cls.name for cls in kept] == ["quantization"]
    assert [item.technique for item in left_out] == ["vocab_trim", "adapter_only"]
    assert left_out[0].reason.startswith(UNIGRAM_REASON)
    assert left_out[1] == LeftOut("adapter_only", "no roberta here")  # the old one-argument check is still asked
    assert left_out[1].notice() == "note: technique 'adapter_only' is left out of this search: no roberta here"
    # The same techniques on a model and tokenizer they support: nothing is left out.
    kept, left_out = supported_techniques(techniques, _model("bert", tiny_tokenizer()), named=False)
    assert kept == techniques and left_out == []


def test_a_technique_the_user_named_that_cannot_run_is_an_error_naming_it():
    host = build_host(autoload=False)
    techniques = [host.techniques["quantization"], host.techniques["vocab_trim"]]
    with pytest.raises(InputError, match=r"technique 'vocab_trim' does not support this model: " + UNIGRAM_REASON):
        supported_techniques(techniques, _model("bert", tiny_unigram_tokenizer()), named=True)
    kept, _ = supported_techniques(techniques, _model("roberta", tiny_tokenizer()), named=True)
    assert kept == techniques  # a RoBERTa-layout model with WordPiece: vocab_trim runs


def test_starting_points_lose_the_techniques_left_out_and_keep_the_rest():
    host = build_host(autoload=False)
    plans = load_starting_points(default_file(), set(host.techniques.names()))
    with_trim = [plan for plan in plans if "vocab_trim" in plan]
    assert with_trim, "the built-in starting points should use vocab_trim for this test to mean anything"
    stripped = without_techniques(plans, {"vocab_trim"}, [entry.cls for entry in host.techniques])
    assert len(stripped) == len(plans)  # the built-in plan without vocab_trim is still a distinct plan
    assert all("vocab_trim" not in plan for plan in stripped)
    assert {name: fields for name, fields in with_trim[0].items() if name != "vocab_trim"} in stripped
    # Emptied and repeated plans go; so does one whose other technique requires the removed one.
    requiring = type("NeedsTrim", (AdapterOnly,), {"name": "needs_trim", "requires": frozenset({"vocab_trim"})})
    plans = [{"vocab_trim": {}}, {"quantization": {"dtype": "int8"}},
             {"vocab_trim": {}, "quantization": {"dtype": "int8"}}, {"vocab_trim": {}, "needs_trim": {}}]
    assert without_techniques(plans, {"vocab_trim"}, [requiring]) == [{"quantization": {"dtype": "int8"}}]


@pytest.fixture(scope="module")
def unigram_task(tmp_path_factory):
    """A user's own RoBERTa-layout classifier whose tokenizer is Unigram (XLM-R style), and its data."""
    root = tmp_path_factory.mktemp("unigram-task")
    tokenizer = tiny_unigram_tokenizer(root / "model")
    model = tiny_model("roberta", vocab_size=len(tokenizer))
    model.config.id2label, model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    model.save_pretrained(root / "model", safe_serialization=True)
    texts, labels = synthetic_sentiment(160, seed=2)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "data.csv", index=False)
    return root


def _args(task, out, *extra):
    return ["search", "--model", str(task / "model"), "--data", str(task / "data.csv"), "--out", str(out),
            "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.5", "--seed", "1", *extra]


def test_the_default_search_goes_on_without_vocab_trim_on_a_unigram_model(unigram_task, tmp_path, capsys):
    out, plans = tmp_path / "run", tmp_path / "plans.yaml"
    # The first plan is tried without vocab_trim; the second, nothing but vocab_trim, goes.
    plans.write_text("- {vocab_trim: {min_count: 2}, ffn_pruning: {keep_fraction: 0.7}}\n- {vocab_trim: {}}\n")
    options = {"model": unigram_task / "model", "data": unigram_task / "data.csv", "out": out, "trials": 3,
               "repeats": 3, "warmup": 1, "no_progress": True, "max_accuracy_drop": 0.5, "seed": 1,
               "starting_points": str(plans)}
    host = build_host(autoload=False, extra_plugins=[("shy", ShyPlugin())])
    run_search(settings_from_options(options), host)
    notices = sorted(line for line in capsys.readouterr().err.splitlines() if "left out" in line)
    assert len(notices) == 3  # one line each (prompt_tuning: soft prompts are for decoders)
    assert notices[0].startswith("note: technique 'prompt_tuning' is left out of this search: soft prompts are for "
                                 "decoder models")
    assert notices[1] == "note: technique 'shy_of_roberta' is left out of this search: no roberta here"
    assert notices[2].startswith(f"note: technique 'vocab_trim' is left out of this search: {UNIGRAM_REASON}")
    run = json.loads((out / "run.json").read_text())
    assert sorted(run["techniques_left_out"], key=lambda item: item["technique"]) == [
        {"technique": "prompt_tuning", "reason": notices[0].split(": ", 2)[2]},
        {"technique": "shy_of_roberta", "reason": "no roberta here"},
        {"technique": "vocab_trim", "reason": notices[2].split(": ", 2)[2]}]
    assert "vocab_trim" not in run["techniques"] and "quantization" in run["techniques"]
    report = (out / "report.md").read_text()
    assert "left out, not supporting this model: " in report
    assert f"vocab_trim ({UNIGRAM_REASON}" in report and "shy_of_roberta (no roberta here)" in report
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    assert not trials["plan"].str.contains("vocab_trim|shy_of_roberta").any()
    assert trials.loc[0, "plan"] == "ffn_pruning(keep_fraction=0.7, multiple_of=8)"
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs[ENQUEUED] == 1
    assert not any("vocab_trim" in name or "shy" in name for trial in study.trials for name in trial.params)
    # Its by-hand reference is reported as not run, with the reason, instead of being tried.
    shy = [row for row in study.user_attrs[REFERENCES] if row["name"] == "shy alone"]
    assert shy == [{"name": "shy alone", "plan": [{"technique": "shy_of_roberta", "version": "1",
                                                   "config": {"on": True}}],
                    "error": "does not support this model: no roberta here"}]


def test_a_named_technique_that_cannot_run_exits_2_with_the_reason(unigram_task, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(unigram_task, out, "--trials", "2", "--techniques", "vocab_trim,quantization")) == 2
    err = capsys.readouterr().err
    assert f"autocompress: error: technique 'vocab_trim' does not support this model: {UNIGRAM_REASON}" in err
    assert not (out / "run.json").exists()  # stopped before the baseline was measured


def test_isolated_trials_search_the_techniques_the_search_process_chose(unigram_task, tmp_path, capsys):
    out, plans = tmp_path / "run", tmp_path / "plans.yaml"
    plans.write_text("- {vocab_trim: {}, ffn_pruning: {keep_fraction: 0.7}}\n")
    assert main(_args(unigram_task, out, "--trials", "1", "--starting-points", str(plans), "--isolate")) == 0
    assert "note: technique 'vocab_trim' is left out" in capsys.readouterr().err
    trials = pd.read_csv(out / "trials.csv")
    # The child rebuilt the same search (without vocab_trim) and ran the parent's plan.
    assert list(trials["state"]) == ["COMPLETE"] and trials.loc[0, "plan"].startswith("ffn_pruning(keep_fraction=0.7")


def test_a_child_that_would_search_other_techniques_than_its_parent_refuses(unigram_task):
    from autocompress.search.isolate import ChildJob, _child_environment, host_recipe
    from autocompress.study.record import MEASURED, Baseline

    settings = settings_from_options({"model": unigram_task / "model", "data": unigram_task / "data.csv"})
    host = build_host()
    task = host.tasks[settings.task](settings.task_options).load()
    baseline = Baseline(0.5, 0.5, dict.fromkeys(MEASURED, 1.0)).as_dict()
    searched = tuple(name for name in host.techniques.names() if name not in ("vocab_trim", "prompt_tuning"))

    def job(techniques):
        return ChildJob(settings=settings, recipe=host_recipe(host), fingerprint=task.fingerprint, baseline=baseline,
                        number=0, params={}, user_attrs={}, measurements={}, techniques=techniques)

    assert [cls.name for cls in _child_environment(job(searched)).techniques] == list(searched)
    with pytest.raises(RuntimeError, match=r"the child process would search other techniques \(.*\) than the "
                                           r"search process \(.*vocab_trim.*\)"):
        _child_environment(job(("vocab_trim", *searched)))
