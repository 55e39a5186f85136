"""Results computed from the stored study (data only; rendering lives elsewhere).

Everything here reads the Optuna storage, so it works the same for a finished, interrupted
or multi-worker search: ``trials.csv``, ``pareto.json`` and the recommended trial.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from autocompress.search.settings import Limits

MEASURED = ("latency_ms", "latency_p90_ms", "speedup", "teacher_latency_ms", "memory_mb", "model_mb",
            "activation_mb", "parameters")
OBJECTIVES = {"val_accuracy": "max", "latency_ms": "min", "memory_mb": "min"}


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial as one trials.csv row: number, state, how it ended, plan, accuracy, measurements, params."""
    attrs = trial.user_attrs
    complete = trial.state == optuna.trial.TrialState.COMPLETE and attrs.get("ended") == "complete"
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "ended": ended_reason(trial),
        "plan": attrs.get("plan", ""),
        "accuracy": attrs.get("accuracy"),
        "val_accuracy": attrs.get("val_accuracy"),
        **{key: attrs.get(key) for key in MEASURED},
        "feasible": bool(complete and all(v <= 0 for v in trial.constraints.values())),
        "reason": attrs.get("reason", ""),
        "duration_s": attrs.get("duration_s"),
        "work_s": attrs.get("work_s"),
    }
    row.update({f"param.{k}": v for k, v in trial.params.items()})
    return row


def ended_reason(trial: optuna.trial.FrozenTrial) -> str:
    """How a trial ended; a FAIL without a recorded reason is one whose process died mid-trial."""
    ended = trial.user_attrs.get("ended")
    if ended:
        return ended
    if trial.state == optuna.trial.TrialState.FAIL:
        return "interrupted"
    return trial.state.name.lower()


COLUMNS = ["number", "state", "ended", "plan", "accuracy", "val_accuracy", *MEASURED, "feasible", "reason",
           "duration_s", "work_s"]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (see ``trial_row``), ordered by trial number."""
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame(rows).sort_values("number").reset_index(drop=True)


def _dominates(a: pd.Series, b: pd.Series) -> bool:
    not_worse = all(
        (a[c] >= b[c]) if d == "max" else (a[c] <= b[c]) for c, d in OBJECTIVES.items()
    )
    better = any((a[c] > b[c]) if d == "max" else (a[c] < b[c]) for c, d in OBJECTIVES.items())
    return not_worse and better


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Feasible trials that no other feasible trial dominates (validation accuracy, latency, memory)."""
    feasible = frame[frame["feasible"]]
    keep = [
        i for i, row in feasible.iterrows()
        if not any(_dominates(other, row) for j, other in feasible.iterrows() if j != i)
    ]
    return feasible.loc[keep]


def recommend(frame: pd.DataFrame, prefer: str) -> pd.Series | None:
    """The feasible trial to ship: the fastest (or smallest, or most accurate) one; ties by accuracy."""
    feasible = frame[frame["feasible"]]
    if feasible.empty:
        return None
    if prefer == "accuracy":
        order = feasible.sort_values(["val_accuracy", "latency_ms"], ascending=[False, True])
    else:
        key = "latency_ms" if prefer == "latency" else "memory_mb"
        order = feasible.sort_values([key, "val_accuracy"], ascending=[True, False])
    return order.iloc[0]


def limit_misses(row: pd.Series, limits: Limits, baseline_val_accuracy: float) -> dict[str, float]:
    """How far a trial is from each limit (positive = missed by that much)."""
    misses = {}
    if limits.max_latency_ms is not None and _number(row.get("latency_ms")):
        misses["latency_ms"] = row["latency_ms"] - limits.max_latency_ms
    if limits.max_memory_mb is not None and _number(row.get("memory_mb")):
        misses["memory_mb"] = row["memory_mb"] - limits.max_memory_mb
    if limits.max_accuracy_drop is not None and _number(row.get("val_accuracy")):
        misses["accuracy_drop"] = (baseline_val_accuracy - row["val_accuracy"]) - limits.max_accuracy_drop
    return misses


def _number(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def nearest_candidates(frame: pd.DataFrame, limits: Limits, baseline: dict[str, Any], k: int = 3) -> list[dict]:
    """When nothing is feasible: the trials closest to the limits, with each limit's gap."""
    scored = []
    scales = {"latency_ms": baseline["latency_ms"], "memory_mb": baseline["memory_mb"], "accuracy_drop": 0.01}
    for _, row in frame[frame["latency_ms"].notna()].iterrows():
        misses = limit_misses(row, limits, baseline["val_accuracy"])
        if "val_accuracy" not in row or not _number(row.get("val_accuracy")):
            misses.setdefault("accuracy_drop", float("nan"))
        distance = sum(max(0.0, v) / scales[key] for key, v in misses.items() if not math.isnan(v))
        scored.append((distance, int(row["number"]), row, misses))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [
        {"trial": number, "plan": row["plan"], "accuracy": _clean(row.get("accuracy")),
         "latency_ms": _clean(row["latency_ms"]), "memory_mb": _clean(row["memory_mb"]),
         "missed_by": {key: round(v, 4) for key, v in misses.items() if not math.isnan(v) and v > 0}}
        for _, number, row, misses in scored[:k]
    ]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _params(row: pd.Series) -> dict[str, Any]:
    return {k[len("param."):]: _clean(v) for k, v in row.items() if k.startswith("param.") and _number(v)}


def pareto_document(frame: pd.DataFrame, baseline: dict[str, Any], limits: Limits, prefer: str) -> dict[str, Any]:
    front = pareto_front(frame).sort_values("latency_ms")
    best = recommend(frame, prefer)
    document: dict[str, Any] = {
        "baseline": baseline,
        "limits": {"max_latency_ms": limits.max_latency_ms, "max_memory_mb": limits.max_memory_mb,
                   "max_accuracy_drop": limits.max_accuracy_drop},
        "front": [
            {"trial": int(row["number"]), "plan": row["plan"], "params": _params(row),
             "accuracy": _clean(row["accuracy"]), "val_accuracy": _clean(row["val_accuracy"]),
             "latency_ms": _clean(row["latency_ms"]), "latency_p90_ms": _clean(row["latency_p90_ms"]),
             "speedup": _clean(row["speedup"]), "teacher_latency_ms": _clean(row["teacher_latency_ms"]),
             "memory_mb": _clean(row["memory_mb"]), "parameters": _clean(row["parameters"]),
             "feasible": bool(row["feasible"])}
            for _, row in front.iterrows()
        ],
        "recommended": None if best is None else int(best["number"]),
    }
    if best is None:
        document["nearest"] = nearest_candidates(frame, limits, baseline)
    return document


def write_tables(frame: pd.DataFrame, document: dict[str, Any], out_dir: Path) -> None:
    frame.to_csv(out_dir / "trials.csv", index=False)
    (out_dir / "pareto.json").write_text(json.dumps(document, indent=2))


def hypervolume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    """Exact hypervolume dominated by ``points`` (all objectives minimised) up to ``reference``.

    Two or three objectives; slices along the last objective and sweeps the first two, which is
    exact and fast for the few hundred points a search produces.
    """
    pts = [p for p in points if all(v < r for v, r in zip(p, reference, strict=True))]
    if not pts:
        return 0.0
    if len(reference) == 2:
        return _hypervolume_2d([(p[0], p[1]) for p in pts], reference)
    pts.sort(key=lambda p: p[2])
    total = 0.0
    for i, point in enumerate(pts):
        top = pts[i + 1][2] if i + 1 < len(pts) else reference[2]
        if top > point[2]:
            total += _hypervolume_2d([(p[0], p[1]) for p in pts[: i + 1]], reference[:2]) * (top - point[2])
    return total


def _hypervolume_2d(points: list[tuple[float, float]], reference: tuple[float, ...]) -> float:
    area, best_y = 0.0, reference[1]
    for x, y in sorted(points):
        if y < best_y:
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return area


def normalised_points(frame: pd.DataFrame, baseline: dict[str, Any]) -> pd.DataFrame:
    """Feasible complete trials as minimisation objectives relative to the teacher:
    (1 - accuracy / teacher accuracy, latency / teacher latency, memory / teacher memory)."""
    feasible = frame[frame["feasible"]]
    return pd.DataFrame({
        "number": feasible["number"],
        "error": 1.0 - feasible["val_accuracy"].astype(float) / baseline["val_accuracy"],
        "latency": feasible["latency_ms"].astype(float) / baseline["latency_ms"],
        "memory": feasible["memory_mb"].astype(float) / baseline["memory_mb"],
    })


#: Reference point of the normalised hypervolume: a model as slow and as big as the teacher, with
#: half its accuracy, dominates nothing. The teacher itself would score 0.5.
HYPERVOLUME_REFERENCE = (0.5, 1.0, 1.0)


def hypervolume_history(frame: pd.DataFrame, baseline: dict[str, Any]) -> pd.DataFrame:
    """Normalised hypervolume of the feasible trials found up to each trial number."""
    points = normalised_points(frame, baseline)
    rows, seen = [], []
    for number in frame["number"]:
        seen.extend(tuple(r) for r in points[points["number"] == number][["error", "latency", "memory"]].to_numpy())
        rows.append({"number": int(number), "hypervolume": hypervolume(seen, HYPERVOLUME_REFERENCE)})
    return pd.DataFrame(rows, columns=["number", "hypervolume"])
