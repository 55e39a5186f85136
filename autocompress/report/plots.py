"""The report's figures (matplotlib, no display needed): built as figures, saved as PNG bytes.

Each figure answers one question: where are the candidates against the limits (validation
accuracy vs latency, vs memory), did the search keep improving (progress), and which choices
mattered (importances). The ``*_figure`` functions return the matplotlib figure, so tests can
check what is drawn (axis ranges, lines, labels) rather than pixels.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from autocompress.report.run import RunData  # noqa: E402
from autocompress.study import results  # noqa: E402
from autocompress.study.record import DIRECTIONS, ENDED, OBJECTIVES, VAL_ACCURACY, Ended, quality_name  # noqa: E402

FEASIBLE, INFEASIBLE, REJECTED, FRONT, LIMIT = "#1f77b4", "#ff7f0e", "#9e9e9e", "#2ca02c", "#d62728"
#: The accuracy the trade-off plots show: the split the accuracy limit and the Pareto front use.
ACCURACY = VAL_ACCURACY
ACCURACY_LABEL = "validation {metric} (the split the limit and the front use)"
#: A limit further than this factor beyond the data (or below it) is marked at the axis edge
#: instead of stretching the axis: drawn to scale, it would squeeze every point into one column.
OFF_SCALE = 1.5
#: Parameter importances need this many trained trials; with fewer they rank noise.
MIN_TRAINED_FOR_IMPORTANCES = 8


def png(figure: plt.Figure) -> bytes:
    """The figure as PNG bytes (and closed)."""
    buffer = io.BytesIO()
    # No metadata: the PNG must not carry any URL (the page is checked to hold none).
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _finite(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def limit_placement(limit: float, values: Collection[float]) -> str:
    """Where a limit goes on an axis showing ``values``: "in range" (drawn at its value), or
    "above"/"below" (off scale: marked at that edge, the axis kept to the data)."""
    low, high = min(values), max(values)
    if limit > OFF_SCALE * high:
        return "above"
    if limit < low / OFF_SCALE:
        return "below"
    return "in range"


def tradeoff_figure(run: RunData, x: str, label: str, limit: float | None) -> plt.Figure:
    """Validation accuracy against ``x`` (latency_ms or memory_mb) for every measured trial."""
    frame = run.frame[run.frame[x].notna()]
    complete = frame[frame[ENDED] == Ended.COMPLETE.value]
    feasible = complete[complete["feasible"]]
    infeasible = complete[~complete["feasible"]]
    rejected = frame[frame[ENDED] == Ended.INFEASIBLE.value]
    front = run.front
    base = run.baseline
    references = [r for r in run.references if _finite(r.get(x)) and _finite(r.get(ACCURACY))]

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    accuracies = [base[ACCURACY], *complete[ACCURACY].dropna(), *(r[ACCURACY] for r in references)]
    floor = min(accuracies) - 0.02
    axes.scatter(infeasible[x], infeasible[ACCURACY], marker="x", color=INFEASIBLE, label="misses a limit")
    axes.scatter(feasible[x], feasible[ACCURACY], color=FEASIBLE, alpha=0.7, label="meets the limits")
    axes.scatter(rejected[x], [floor] * len(rejected), marker="|", s=120, color=REJECTED,
                 label="rejected before training (no accuracy)")
    if not front.empty:
        ordered = front.sort_values(x)
        axes.plot(ordered[x], ordered[ACCURACY], color=FRONT, lw=1, alpha=0.6)
        axes.scatter(ordered[x], ordered[ACCURACY], s=70, facecolors="none", edgecolors=FRONT, lw=1.5,
                     label="Pareto front")
        for _, row in ordered.iterrows():
            axes.annotate(f"#{int(row['number'])}", (row[x], row[ACCURACY]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=FRONT)
    best = run.recommended
    if best is not None:
        axes.scatter([best[x]], [best[ACCURACY]], marker="*", s=260, color=LIMIT, zorder=5,
                     label=f"recommended #{int(best['number'])}")
    axes.scatter([base[x]], [base[ACCURACY]], marker="D", s=70, color="black", zorder=5, label="teacher")
    for ref, marker in zip(references, "svP^<>p", strict=False):
        axes.scatter([ref[x]], [ref[ACCURACY]], marker=marker, s=55, color="#8c564b", zorder=4,
                     label=f"by hand: {ref['name']}")
    if limit is not None:
        values = [base[x], *frame[x], *(r[x] for r in references)]
        placement = limit_placement(limit, values)
        if placement == "in range":
            axes.axvline(limit, color=LIMIT, ls="--", lw=1, label=f"limit {limit:g}")
        else:  # an arrow at the edge, pointing to where the limit lies; the axis stays on the data
            right = placement == "above"
            axes.annotate(f"limit {limit:g} {'→' if right else '←'}", xy=(1.0 if right else 0.0, 0.5),
                          xycoords="axes fraction", ha="right" if right else "left", va="center", fontsize=8,
                          color=LIMIT, rotation=90, gid="off-scale-limit")
    if run.limits.max_accuracy_drop is not None:
        axes.axhline(base[ACCURACY] - run.limits.max_accuracy_drop, color="#7f7f7f", ls=":", lw=1,
                     label="teacher's validation accuracy − allowed drop (the limit)")
    axes.set_xlabel(label)
    axes.set_ylabel(ACCURACY_LABEL.format(metric=quality_name(run.record)), fontsize=8)  # stored values, as limited
    axes.grid(alpha=0.25)
    # Below the axes, never over the points.
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return figure


def tradeoff(run: RunData, x: str, label: str, limit: float | None) -> bytes:
    return png(tradeoff_figure(run, x, label, limit))


def progress_figure(run: RunData) -> plt.Figure:
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
    left.set_ylabel("best feasible latency (ms)")
    left.legend(fontsize=7)
    right.plot(history["number"], history["hypervolume"], drawstyle="steps-post", color=FRONT)
    right.set_ylabel("hypervolume (teacher-normalised)")
    for axes in (left, right):
        axes.set_xlabel("trial")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers
        axes.grid(alpha=0.25)
    figure.tight_layout()
    return figure


def progress(run: RunData) -> bytes:
    return png(progress_figure(run))


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


#: (column, objective index, sign that makes lower better: PED-ANOVA ranks what leads to low values).
IMPORTANCE_TARGETS = tuple((objective.label.split()[-1], index, -1.0 if objective.direction == "maximize" else 1.0)
                           for index, objective in enumerate(OBJECTIVES))


def technique_of(param: str) -> set[str]:
    """The technique name(s) a trial parameter belongs to: ``use.a|b`` -> {a, b}, ``a.field`` -> {a}."""
    if param.startswith("use."):
        return set(param[len("use."):].split("|"))
    return {param.split(".", 1)[0]}


@dataclass(frozen=True)
class Importances:
    """Parameter importances per objective, or why there are none."""

    table: pd.DataFrame  #: parameter x objective; NaN where a parameter is not ranked for an objective
    trained: int  #: trained (complete) trials they were computed from
    note: str  #: what they are computed from and what is left out, or why they are hidden


def importances(run: RunData, recovery: Collection[str] = ()) -> Importances:
    """Optuna's parameter importances (its default evaluator, PED-ANOVA) per objective, over the
    trained trials; none below ``MIN_TRAINED_FOR_IMPORTANCES`` of them. Parameters of the
    ``recovery`` techniques (training settings) are ranked for accuracy only: they cannot change
    latency or memory."""
    trained = int((run.frame[ENDED] == Ended.COMPLETE.value).sum())
    if trained < MIN_TRAINED_FOR_IMPORTANCES:
        return Importances(pd.DataFrame(), trained, f"Parameter importances appear once {MIN_TRAINED_FOR_IMPORTANCES} "
                           f"trials have been trained ({trained} so far): from fewer they would rank noise.")
    study = completed_study(run)
    names = sorted({name for trial in study.trials for name in trial.params})
    columns = {}
    for column, index, sign in IMPORTANCE_TARGETS:
        params = names if index == 0 else [p for p in names if not technique_of(p) <= set(recovery)]
        if not params:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "computes importances for low target values": negated above
            columns[column] = optuna.importance.get_param_importances(
                study, params=params, target=lambda t, i=index, s=sign: s * t.values[i])
    table = pd.DataFrame(columns, columns=[c for c, _, _ in IMPORTANCE_TARGETS])
    table = table.loc[table.max(axis=1).sort_values(ascending=False).index][:12]
    left_out = sorted(p for p in names if technique_of(p) <= set(recovery))
    note = (f"Optuna's parameter importances (PED-ANOVA, its default) over the {trained} trained trials, per "
            "objective.")
    if left_out:
        note += (f" Recovery-stage parameters ({', '.join(left_out)}) are ranked for accuracy only: training "
                 "changes no shape, so they cannot change latency or memory.")
    return Importances(table, trained, note)


def importances_figure(found: Importances) -> plt.Figure:
    table = found.table
    figure, axes = plt.subplots(figsize=(6.4, 0.35 * len(table) + 1.2))
    height = 0.8 / len(table.columns)
    positions = range(len(table))
    for index, name in enumerate(table.columns):
        axes.barh([p + index * height for p in positions], table[name].fillna(0.0), height=height,
                  label=name if table[name].notna().any() else f"{name} (not ranked)")
    axes.set_yticks([p + height for p in positions], table.index, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("importance (PED-ANOVA, normalised per objective)")
    axes.legend(fontsize=7)
    return figure
