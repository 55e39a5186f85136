"""Results computed from the stored trial records (data only; rendering lives in the report).

Everything here reads the records of the Optuna storage, so it works the same for a finished,
interrupted or multi-worker search: ``trials.csv``, ``pareto.json``, the Pareto front, the
recommended trial, the nearest candidates when nothing is feasible, and the hypervolume.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import optuna
import pandas as pd

from autocompress.study.layout import RunLayout
from autocompress.study.limits import ACCURACY_DROP, LATENCY, MEMORY, Limits
from autocompress.study.record import (
    COLUMNS,
    LATENCIES,
    OBJECTIVES,
    TEST_ACCURACY,
    VAL_ACCURACY,
    Baseline,
    TrialRecord,
    dominates,
)

#: What ``--prefer`` may name: which feasible trial is recommended.
PREFERENCES = ("latency", "memory", "accuracy")


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of ``study`` as a record, ordered by trial number."""
    return sorted((TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)), key=lambda r: r.number)


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per trial (trials.csv), ordered by trial number."""
    rows = [record.row() for record in records]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame(rows).sort_values("number").reset_index(drop=True)


def _objectives(record: TrialRecord) -> dict[str, Any]:
    values = {VAL_ACCURACY: record.val_accuracy, **record.measured}
    return {objective.name: values[objective.name] for objective in OBJECTIVES}


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Feasible trials that no other feasible trial dominates on the study's objectives, fastest first."""
    feasible = [r for r in records if r.feasible]
    points = {r.number: _objectives(r) for r in feasible}
    front = [r for r in feasible
             if not any(dominates(points[other.number], points[r.number]) for other in feasible if other is not r)]
    return sorted(front, key=lambda r: (r.measured["latency_ms"], r.number))


def recommend(records: Sequence[TrialRecord], prefer: str) -> TrialRecord | None:
    """The feasible trial to ship: the fastest (or smallest, or most accurate) one; ties by the other."""
    feasible = [r for r in records if r.feasible]
    if not feasible:
        return None
    if prefer == "accuracy":
        return min(feasible, key=lambda r: (-r.val_accuracy, r.measured["latency_ms"]))
    key = "latency_ms" if prefer == "latency" else "memory_mb"
    return min(feasible, key=lambda r: (r.measured[key], -r.val_accuracy))


def limit_gaps(record: TrialRecord, limits: Limits, baseline: Baseline) -> dict[str, float]:
    """How far a stored trial is from each limit (see ``Limits.gaps``)."""
    drop = None if record.val_accuracy is None else baseline.val_accuracy - record.val_accuracy
    return limits.gaps(record.measured["latency_ms"], record.measured["memory_mb"], drop)


def nearest_candidates(records: Sequence[TrialRecord], limits: Limits, baseline: Baseline,
                       k: int = 3) -> list[dict[str, Any]]:
    """When nothing is feasible: the measured trials closest to the limits, with each missed limit's gap."""
    scales = {LATENCY: baseline.measured["latency_ms"], MEMORY: baseline.measured["memory_mb"], ACCURACY_DROP: 0.01}
    scored = []
    for record in records:
        if record.measured["latency_ms"] is None:
            continue
        gaps = limit_gaps(record, limits, baseline)
        distance = sum(max(0.0, gap) / scales[name] for name, gap in gaps.items())
        scored.append((distance, record.number, record, gaps))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [
        {"trial": record.number, "plan": record.plan, "steps": _steps(record), TEST_ACCURACY: record.test_accuracy,
         "latency_ms": record.measured["latency_ms"], "memory_mb": record.measured["memory_mb"],
         "missed_by": {name: round(gap, 4) for name, gap in gaps.items() if gap > 0}}
        for _, _, record, gaps in scored[:k]
    ]


def _steps(record: TrialRecord) -> list[dict[str, Any]]:
    return [step.as_manifest() for step in record.steps or ()]


def front_entry(record: TrialRecord) -> dict[str, Any]:
    """A Pareto-front trial as listed in pareto.json."""
    measured = record.measured
    return {"trial": record.number, "plan": record.plan, "steps": _steps(record), "params": dict(record.params),
            TEST_ACCURACY: record.test_accuracy, VAL_ACCURACY: record.val_accuracy,
            "latency_ms": measured["latency_ms"], "latency_p90_ms": measured["latency_p90_ms"],
            "speedup": record.speedup, "teacher_latency_ms": record.teacher_latency_ms,
            "memory_mb": measured["memory_mb"], "parameters": measured["parameters"], "feasible": record.feasible,
            LATENCIES: dict(record.latencies)}


def pareto_document(records: Sequence[TrialRecord], baseline: Mapping[str, Any], limits: Limits,
                    prefer: str) -> dict[str, Any]:
    """pareto.json: the teacher, the limits, the front, the recommended trial (or the nearest ones)."""
    best = recommend(records, prefer)
    document: dict[str, Any] = {
        "baseline": dict(baseline),
        "limits": asdict(limits),
        "front": [front_entry(record) for record in pareto_front(records)],
        "recommended": None if best is None else best.number,
    }
    if best is None:
        document["nearest"] = nearest_candidates(records, limits, Baseline.from_dict(baseline))
    return document


def write_tables(frame: pd.DataFrame, document: dict[str, Any], layout: RunLayout) -> None:
    """trials.csv and pareto.json."""
    frame.to_csv(layout.trials_csv, index=False)
    layout.pareto_json.write_text(json.dumps(document, indent=2))


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


def normalised_points(frame: pd.DataFrame, baseline: Mapping[str, Any]) -> pd.DataFrame:
    """Feasible complete trials as minimisation objectives relative to the teacher:
    (1 - validation accuracy / the teacher's, latency / the teacher's, memory / the teacher's)."""
    feasible = frame[frame["feasible"]]
    return pd.DataFrame({
        "number": feasible["number"],
        "error": 1.0 - feasible[VAL_ACCURACY].astype(float) / baseline[VAL_ACCURACY],
        "latency": feasible["latency_ms"].astype(float) / baseline["latency_ms"],
        "memory": feasible["memory_mb"].astype(float) / baseline["memory_mb"],
    })


#: Reference point of the normalised hypervolume: a model as slow and as big as the teacher, with
#: half its accuracy, dominates nothing. The teacher itself would score 0.5.
HYPERVOLUME_REFERENCE = (0.5, 1.0, 1.0)


def hypervolume_history(frame: pd.DataFrame, baseline: Mapping[str, Any]) -> pd.DataFrame:
    """Normalised hypervolume of the feasible trials found up to each trial number."""
    points = normalised_points(frame, baseline)
    rows, seen = [], []
    for number in frame["number"]:
        seen.extend(tuple(r) for r in points[points["number"] == number][["error", "latency", "memory"]].to_numpy())
        rows.append({"number": int(number), "hypervolume": hypervolume(seen, HYPERVOLUME_REFERENCE)})
    return pd.DataFrame(rows, columns=["number", "hypervolume"])
