"""The free floor as a study stores it (user attribute ``free_floor``): the uncompressed teacher
on every available runtime with each post step alone, measured once per study by
autocompress/search/floor.py. The report reads it from here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autocompress.study.record import TEST_ACCURACY, VAL_ACCURACY

FLOOR_ATTR = "free_floor"


def measured_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in rows if row.get("speedup") is not None]


def best_free(rows: Sequence[Mapping[str, Any]], teacher_val_accuracy: float,
              max_accuracy_drop: float | None) -> Mapping[str, Any] | None:
    """The fastest floor row whose validation accuracy is within ``max_accuracy_drop`` of the teacher's."""
    allowed = [row for row in measured_rows(rows)
               if max_accuracy_drop is None or teacher_val_accuracy - row[VAL_ACCURACY] <= max_accuracy_drop + 1e-12]
    return max(allowed, key=lambda row: row["speedup"]) if allowed else None


def describe(row: Mapping[str, Any]) -> str:
    """'openvino, bf16 only' — where the floor row ran and with which post step."""
    return f"{row['target']}, {row['variant']}"


def stored_rows(study: Any) -> list[Mapping[str, Any]]:
    """The floor rows a study holds ([] when it has none)."""
    return list(study.user_attrs.get(FLOOR_ATTR) or [])


def comparison(rows: Sequence[Mapping[str, Any]], found_speedup: float, teacher_val_accuracy: float,
               max_accuracy_drop: float | None) -> str | None:
    """One verdict line: the found model's speed-up over the best free option, or None without a floor."""
    best = best_free(rows, teacher_val_accuracy, max_accuracy_drop)
    if best is None:
        return None
    within = "" if max_accuracy_drop is None else " within the accuracy limit"
    return (f"{found_speedup / best['speedup']:.2f}× faster than the best free option{within}, the uncompressed "
            f"teacher on {describe(best)} ({best['speedup']:.2f}× the teacher, "
            f"test accuracy {best[TEST_ACCURACY]:.4f})")
