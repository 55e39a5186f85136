"""The report's figures as PNG bytes (matplotlib, no display needed).

Each figure answers one question: where are the candidates against the limits (accuracy vs
latency, accuracy vs memory), did the search keep improving (progress), and which choices
mattered (importances).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from autocompress.report.run import RunData  # noqa: E402
from autocompress.study import results  # noqa: E402
from autocompress.study.record import DIRECTIONS, ENDED, OBJECTIVES, TEST_ACCURACY, Ended  # noqa: E402

FEASIBLE, INFEASIBLE, REJECTED, FRONT = "#1f77b4", "#ff7f0e", "#9e9e9e", "#2ca02c"


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    # No metadata: the PNG must not carry any URL (the page is checked to hold none).
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _finite(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def tradeoff(run: RunData, x: str, label: str, limit: float | None) -> bytes:
    """Test accuracy against ``x`` (latency_ms or memory_mb) for every measured trial."""
    frame = run.frame[run.frame[x].notna()]
    complete = frame[frame[ENDED] == Ended.COMPLETE.value]
    feasible = complete[complete["feasible"]]
    infeasible = complete[~complete["feasible"]]
    rejected = frame[frame[ENDED] == Ended.INFEASIBLE.value]
    front = run.front
    base = run.baseline

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    accuracies = [base[TEST_ACCURACY], *complete[TEST_ACCURACY].dropna()]
    floor = min(accuracies) - 0.02
    axes.scatter(infeasible[x], infeasible[TEST_ACCURACY], marker="x", color=INFEASIBLE, label="misses a limit")
    axes.scatter(feasible[x], feasible[TEST_ACCURACY], color=FEASIBLE, alpha=0.7, label="meets the limits")
    axes.scatter(rejected[x], [floor] * len(rejected), marker="|", s=120, color=REJECTED,
                 label="rejected before training (no accuracy)")
    if not front.empty:
        ordered = front.sort_values(x)
        axes.plot(ordered[x], ordered[TEST_ACCURACY], color=FRONT, lw=1, alpha=0.6)
        axes.scatter(ordered[x], ordered[TEST_ACCURACY], s=70, facecolors="none", edgecolors=FRONT, lw=1.5,
                     label="Pareto front")
        for _, row in ordered.iterrows():
            axes.annotate(f"#{int(row['number'])}", (row[x], row[TEST_ACCURACY]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=FRONT)
    best = run.recommended
    if best is not None:
        axes.scatter([best[x]], [best[TEST_ACCURACY]], marker="*", s=260, color="#d62728", zorder=5,
                     label=f"recommended #{int(best['number'])}")
    axes.scatter([base[x]], [base[TEST_ACCURACY]], marker="D", s=70, color="black", zorder=5, label="teacher")
    shown = [r for r in run.references if _finite(r.get(x)) and _finite(r.get(TEST_ACCURACY))]
    for ref, marker in zip(shown, "svP^<>p", strict=False):
        axes.scatter([ref[x]], [ref[TEST_ACCURACY]], marker=marker, s=55, color="#8c564b", zorder=4,
                     label=f"by hand: {ref['name']}")
    if limit is not None:
        axes.axvline(limit, color="#d62728", ls="--", lw=1, label=f"limit {limit:g}")
    if run.limits.max_accuracy_drop is not None:
        axes.axhline(base[TEST_ACCURACY] - run.limits.max_accuracy_drop, color="#7f7f7f", ls=":", lw=1,
                     label="teacher accuracy - allowed drop")
    axes.set_xlabel(label)
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.25)
    # Below the axes, never over the points.
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return _png(figure)


def progress(run: RunData) -> bytes:
    """Best feasible latency and normalised hypervolume after each trial."""
    frame = run.frame
    history = results.hypervolume_history(frame, run.baseline)
    best, running = [], math.inf
    for _, row in frame.iterrows():
        if row["feasible"]:
            running = min(running, row["latency_ms"])
        best.append(running if math.isfinite(running) else float("nan"))
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.2))
    left.plot(frame["number"], best, drawstyle="steps-post", color=FEASIBLE)
    left.axhline(run.baseline["latency_ms"], color="black", ls=":", lw=1, label="teacher")
    left.set_xlabel("trial")
    left.set_ylabel("best feasible latency (ms)")
    left.legend(fontsize=7)
    left.grid(alpha=0.25)
    right.plot(history["number"], history["hypervolume"], drawstyle="steps-post", color=FRONT)
    right.set_xlabel("trial")
    right.set_ylabel("hypervolume (teacher-normalised)")
    right.grid(alpha=0.25)
    figure.tight_layout()
    return _png(figure)


def completed_study(run: RunData) -> optuna.Study:
    """The trials that were trained and evaluated, as a study of their own: importances computed on
    all COMPLETE trials would count the 0.0 accuracy of trials rejected before training."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(directions=list(DIRECTIONS))
    finally:
        optuna.logging.set_verbosity(verbosity)
    done = set(run.frame[run.frame[ENDED] == Ended.COMPLETE.value]["number"])
    study.add_trials([t for t in run.study.get_trials(deepcopy=False) if t.number in done])
    return study


def importances(run: RunData) -> tuple[pd.DataFrame, bytes | None]:
    """Optuna's parameter importances (fANOVA) for each objective; empty when too few trials."""
    study = completed_study(run)
    columns = {}
    for index, name in enumerate(o.label for o in OBJECTIVES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                columns[name] = optuna.importance.get_param_importances(
                    study, target=lambda t, i=index: t.values[i])
        except (ValueError, RuntimeError):  # fewer than two trials, or no parameter varies
            return pd.DataFrame(), None
    table = pd.DataFrame(columns).fillna(0.0)
    if table.empty:
        return table, None
    table = table.loc[table.max(axis=1).sort_values(ascending=False).index][:12]
    figure, axes = plt.subplots(figsize=(6.4, 0.35 * len(table) + 1.2))
    height = 0.8 / len(table.columns)
    positions = range(len(table))
    for index, name in enumerate(table.columns):
        axes.barh([p + index * height for p in positions], table[name], height=height, label=name)
    axes.set_yticks([p + height for p in positions], table.index, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("importance (fANOVA, normalised per objective)")
    axes.legend(fontsize=7)
    return table, _png(figure)
