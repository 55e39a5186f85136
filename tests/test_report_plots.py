"""What the report's figures draw, checked on the figures' data (axis ranges, lines, labels, ticks),
from small studies written here trial by trial (no search needed)."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from autocompress.report import plots
from autocompress.report.run import RunData
from autocompress.search.settings import Limits
from autocompress.study import record

BASELINE = {"val_accuracy": 0.90, "test_accuracy": 0.88, "latency_ms": 10.0, "latency_p90_ms": 11.0, "memory_mb": 80.0,
            "model_mb": 80.0, "activation_mb": 0.0, "parameters": 20_000_000}
SPACE = {"use.ffn_pruning": CategoricalDistribution([True, False]),
         "ffn_pruning.keep_fraction": FloatDistribution(0.2, 0.9),
         "use.distillation|lora": CategoricalDistribution(["none", "distillation", "lora"]),
         "distillation.temperature": FloatDistribution(1.0, 8.0)}


def _trial(number: int, latency: float, val_accuracy: float, keep: float, temperature: float,
           ended: str = "complete") -> optuna.trial.FrozenTrial:
    """A trained trial whose latency follows the FFN kept (and never the distillation temperature)."""
    memory = 20.0 + 60.0 * keep
    plan = [{"technique": "ffn_pruning", "version": "1", "config": {"keep_fraction": keep}},
            {"technique": "distillation", "version": "1", "config": {"temperature": temperature}}]
    attrs = {"ended": ended, "plan": plan,
             "test_accuracy": val_accuracy - 0.01, "val_accuracy": val_accuracy, "latency_ms": latency,
             "latency_p90_ms": latency * 1.1, "speedup": BASELINE["latency_ms"] / latency,
             "teacher_latency_ms": BASELINE["latency_ms"], "memory_mb": memory, "model_mb": memory,
             "activation_mb": 0.0, "parameters": int(1e7 * keep)}
    return optuna.trial.create_trial(
        params={"use.ffn_pruning": True, "ffn_pruning.keep_fraction": keep, "use.distillation|lora": "distillation",
                "distillation.temperature": temperature},
        distributions=SPACE, values=[val_accuracy if ended == "complete" else 0.0, latency, memory],
        user_attrs=attrs, constraints={"latency_ms": -1.0, "memory_mb": -1.0, "accuracy_drop": -0.01})


def _run(trials, limits: Limits) -> RunData:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for trial in trials:
        study.add_trial(trial)
    study.set_user_attr(record.BASELINE, BASELINE)
    return RunData.from_study(study, limits, "latency")


def _trials(count: int):
    # Temperatures take turns independently of the latencies: they decide nothing here.
    return [_trial(n, latency=2.0 + 6.0 * keep, val_accuracy=0.80 + 0.1 * keep, keep=keep,
                   temperature=[1.5, 6.0, 3.0][n % 3])
            for n, keep in enumerate([0.2 + 0.7 * (i % 5) / 4 for i in range(count)])]


def test_a_limit_far_beyond_the_data_is_marked_at_the_edge_and_the_axis_keeps_to_the_data():
    run = _run(_trials(4), Limits(max_latency_ms=1000.0, max_accuracy_drop=0.05))
    figure = plots.tradeoff_figure(run, "latency_ms", "latency (ms)", 1000.0)
    axes = figure.axes[0]
    largest = max(run.frame["latency_ms"].max(), BASELINE["latency_ms"])
    low, high = axes.get_xlim()
    assert high < 1.5 * largest, (low, high)  # the points spread over the axis, not one column at the left
    assert not [line for line in axes.lines if list(line.get_xdata()) == [1000.0, 1000.0]]
    [marker] = [text for text in axes.texts if text.get_gid() == "off-scale-limit"]
    assert marker.get_text() == "limit 1000 →" and marker.get_position() == (1.0, 0.5)
    plots.png(figure)


def test_a_limit_within_the_data_is_drawn_where_it_is():
    run = _run(_trials(4), Limits(max_latency_ms=7.0))
    axes = plots.tradeoff_figure(run, "latency_ms", "latency (ms)", 7.0).axes[0]
    assert [line for line in axes.lines if list(line.get_xdata()) == [7.0, 7.0]]
    assert not [text for text in axes.texts if text.get_gid() == "off-scale-limit"]
    low_run = _run(_trials(4), Limits(max_latency_ms=0.01))  # far below every point: marked at the left
    axes = plots.tradeoff_figure(low_run, "latency_ms", "latency (ms)", 0.01).axes[0]
    [marker] = [text for text in axes.texts if text.get_gid() == "off-scale-limit"]
    assert marker.get_text() == "limit 0.01 ←" and marker.get_position() == (0.0, 0.5)
    assert axes.get_xlim()[0] > 0.5


def test_the_accuracy_limit_is_drawn_on_the_split_it_is_enforced_on():
    run = _run(_trials(4), Limits(max_accuracy_drop=0.05))
    axes = plots.tradeoff_figure(run, "latency_ms", "latency (ms)", None).axes[0]
    assert axes.get_ylabel().startswith("validation accuracy")
    [limit] = [line for line in axes.lines if line.get_label().endswith("(the limit)")]
    assert list(limit.get_ydata()) == pytest.approx([0.85, 0.85])  # teacher's validation 0.90 - 0.05
    # The points are validation accuracies too (the test accuracies are 0.01 lower here).
    plotted = {round(float(y), 6) for collection in axes.collections for _, y in collection.get_offsets()}
    assert {round(v, 6) for v in run.frame["val_accuracy"]} <= plotted
    assert not {round(v, 6) for v in run.frame["test_accuracy"]} & plotted


def test_the_trial_axis_has_whole_number_ticks():
    figure = plots.progress_figure(_run(_trials(4), Limits()))
    for axes in figure.axes:
        figure.canvas.draw()
        ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_importances_are_hidden_below_the_minimum_of_trained_trials():
    found = plots.importances(_run(_trials(4), Limits()), recovery={"distillation", "lora"})
    assert found.table.empty and found.trained == 4
    assert f"once {plots.MIN_TRAINED_FOR_IMPORTANCES} trials have been trained (4 so far)" in found.note


def test_recovery_parameters_are_ranked_for_accuracy_but_not_for_latency_or_memory():
    run = _run(_trials(12), Limits())
    found = plots.importances(run, recovery={"distillation", "lora"})
    table = found.table
    assert found.trained == 12 and set(table.columns) == {"accuracy", "latency", "memory"}
    assert set(table.index) == set(SPACE)
    for param in ("distillation.temperature", "use.distillation|lora"):
        assert math.isnan(table.loc[param, "latency"]) and math.isnan(table.loc[param, "memory"])
        assert not math.isnan(table.loc[param, "accuracy"])
    assert table.loc["ffn_pruning.keep_fraction", "latency"] > 0  # what really sets latency here
    assert "ranked for accuracy only" in found.note and "distillation.temperature" in found.note
    plots.png(plots.importances_figure(found))
    # Without the stages, a technique's parameters are ranked like any other (the old behaviour).
    assert not math.isnan(plots.importances(run).table.loc["distillation.temperature", "latency"])
