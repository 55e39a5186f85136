"""Starting points: the plans a new study tries first, validated before any expensive work."""

import optuna
import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.errors import InputError
from autocompress.plugin_manager import build_host
from autocompress.search.probe import Probe
from autocompress.search.sampling import plan_params
from autocompress.search.starting_points import ENQUEUED, default_file, load_starting_points
from autocompress.testing import write_tiny_task


@pytest.fixture(scope="module")
def host():
    return build_host(autoload=False)


def _space(host, names):
    techniques = [host.techniques[n] for n in names]
    return techniques, {cls.name: cls.search_space() for cls in techniques}


def test_a_plan_becomes_the_parameters_sample_plan_reads(host):
    techniques, spaces = _space(host, ["ffn_pruning", "distillation", "lora", "quantization"])
    params = plan_params({"ffn_pruning": {"keep_fraction": 0.7}, "distillation": {"epochs": 1.0},
                          "quantization": {"dtype": "int8"}}, techniques, spaces, "here")
    assert params == {"use.ffn_pruning": True, "use.distillation|lora": "distillation", "use.quantization": True,
                      "ffn_pruning.keep_fraction": 0.7, "distillation.epochs": 1.0, "quantization.dtype": "int8"}
    assert plan_params({}, techniques, spaces, "here")["use.distillation|lora"] == "none"


@pytest.mark.parametrize("plan, message", [
    ({"distillation": {}, "lora": {}}, "distillation and lora conflict"),
    ({"ffn_pruning": {"keep_fraction": 1.5}}, "ffn_pruning.keep_fraction = 1.5 is outside its search space"),
    ({"quantization": {"dtype": "int2"}}, "quantization.dtype = 'int2' is outside"),
    ({"ffn_pruning": {"multiple_of": 8}}, "'ffn_pruning.multiple_of' is not a searched field"),
])
def test_bad_plans_are_refused_with_the_reason(host, plan, message):
    techniques, spaces = _space(host, ["ffn_pruning", "distillation", "lora", "quantization"])
    with pytest.raises(InputError, match=message):
        plan_params(plan, techniques, spaces, "file: plan 1")


def test_the_built_in_starting_points_are_valid_for_the_built_in_spaces(host):
    registered = set(host.techniques.names())
    plans = load_starting_points(default_file(), registered)
    techniques, spaces = _space(host, sorted(registered))
    assert len(plans) >= 3 and {"quantization": {"dtype": "int8"}} in plans
    for plan in plans:
        plan_params(plan, techniques, spaces, "built-in")


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 200, seed=3)
    return root


def _search(tiny_task, out, *extra):
    return main(["search", "--model", str(tiny_task / "model"), "--data", str(tiny_task / "data.csv"),
                 "--out", str(out), "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.3",
                 "--techniques", "ffn_pruning,distillation,quantization", *extra])


def test_a_new_study_tries_the_starting_points_first_then_samples(tiny_task, tmp_path):
    assert _search(tiny_task, tmp_path / "run", "--trials", "4") == 0
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    # The plans end in the post step the probe found fastest here (tests/test_probe.py checks the choice).
    best = Probe.from_dict(study.user_attrs["probe"]).best("quantization")
    second = trials.loc[0 if best is None else 1, "plan"]
    assert second.startswith("ffn_pruning(keep_fraction=0.7") and "distillation(" in second and "epochs=1.0" in second
    if best is None:  # no post step pays off here: plan 1 (quantization alone) is left out
        assert "quantization(" not in second and study.user_attrs[ENQUEUED] == 1
        assert [t.user_attrs.get("starting_point") for t in study.trials] == [1, None, None, None]
        return
    # Built-in plans 1 and 2 fit these techniques (3 and 4 need layer_drop/vocab_trim: skipped).
    assert trials.loc[0, "plan"].startswith(f"quantization(dtype={best.config['dtype']}")
    assert f"quantization(dtype={best.config['dtype']}" in second
    assert study.user_attrs[ENQUEUED] == 2
    assert [t.user_attrs.get("starting_point") for t in study.trials] == [1, 2, None, None]
    # Resuming does not queue them again.
    assert _search(tiny_task, tmp_path / "run", "--trials", "5") == 0
    assert [t.user_attrs.get("starting_point") for t in study.trials] == [1, 2, None, None, None]


def test_starting_points_none_and_a_bad_file(tiny_task, tmp_path, capsys):
    assert _search(tiny_task, tmp_path / "none", "--trials", "1", "--starting-points", "none") == 0
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{tmp_path / 'none' / 'study.db'}")
    assert ENQUEUED not in study.user_attrs and study.trials[0].user_attrs.get("starting_point") is None
    bad = tmp_path / "plans.yaml"
    bad.write_text("- ffn_pruning: {keep_fraction: 2}\n")
    assert _search(tiny_task, tmp_path / "bad", "--trials", "1", "--starting-points", str(bad)) == 2
    assert "plan 1: ffn_pruning.keep_fraction = 2 is outside its search space" in capsys.readouterr().err
    bad.write_text("quantization: {dtype: int8}\n")
    assert _search(tiny_task, tmp_path / "bad2", "--trials", "1", "--starting-points", str(bad)) == 2
    assert "expected a list of plans" in capsys.readouterr().err


def test_trials_counts_the_starting_points_and_the_summary_names_those_still_queued(tiny_task, tmp_path, capsys):
    """--trials N runs N trials, starting points included: with 3 plans queued and --trials 2, two run and
    the summary says "2 trials" and that 1 more is queued (it used to count the queued one as a trial)."""
    plans = tmp_path / "plans.yaml"
    plans.write_text("- ffn_pruning: {keep_fraction: 0.7}\n- ffn_pruning: {keep_fraction: 0.5}\n"
                     "- ffn_pruning: {keep_fraction: 0.3}\n")
    out = tmp_path / "run"

    def search(trials: int) -> int:  # no post step searched: no probe (its timings are not checked here)
        return main(["search", "--model", str(tiny_task / "model"), "--data", str(tiny_task / "data.csv"),
                     "--out", str(out), "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop",
                     "0.3", "--techniques", "ffn_pruning", "--starting-points", str(plans), "--trials", str(trials)])

    assert search(2) == 0
    printed = capsys.readouterr().out
    assert "study 'local-search': 2 trials (1 more starting point queued, not run: a larger --trials runs them " \
           "first); results in" in printed
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE", "WAITING"]
    assert "| trials | 2 run (budget 2); 1 starting points queued, not run |" in (out / "report.md").read_text()
    # A larger budget runs the queued plan first; nothing is left queued.
    assert search(3) == 0
    assert "study 'local-search': 3 trials; results in" in capsys.readouterr().out
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"] * 3
    assert trials.loc[2, "plan"].startswith("ffn_pruning(keep_fraction=0.3")
