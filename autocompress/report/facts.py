"""The report's content as plain data (rows of strings); HTML and Markdown only format it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from autocompress.report.run import RunData

ENDED_WORDS = {
    "complete": "trained, evaluated and measured",
    "infeasible-before-training": "rejected before training (missed a latency/memory limit when measured)",
    "pruned": "stopped early by the pruner (weak validation accuracy during recovery)",
    "failed": "failed (error recorded; the search went on)",
    "interrupted": "cut short (process stopped; retried on resume)",
    "timeout": "ran past the per-trial time limit",
}


@dataclass(frozen=True)
class ReportSection:
    """A section a plugin adds to the report (hook ``autocompress_report_sections``).

    ``html`` is a trusted fragment: escape your own strings with ``html.escape``. ``markdown`` is
    the same content for report.md. Sections are ordered by ``order`` (built-ins use 10-90).
    """

    title: str
    html: str
    markdown: str
    order: int = 100


def _word(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    try:
        return f"{float(value):.3g}" if "." in str(value) else str(value)
    except ValueError:
        return str(value)


def plain_plan(plan: str, params: Mapping[str, Any] | None = None) -> str:
    """'a(x=1, y=2) -> b(z=3)' as 'a: x 1, y 2; then b: z 3'.

    With ``params`` (the trial's sampled parameters, ``technique.field``), only the searched
    values are listed: fixed settings such as batch sizes are noise in a table.
    """
    if not plan:
        return "no compression"
    steps = []
    for step in plan.split(" -> "):
        match = re.fullmatch(r"(\w+)\((.*)\)", step.strip())
        if not match:
            steps.append(step)
            continue
        name, values = match.groups()
        if params is not None:
            pairs = [(k.split(".", 1)[1], v) for k, v in params.items() if k.startswith(f"{name}.")]
        else:
            pairs = [tuple(v.split("=", 1)) for v in values.split(", ") if "=" in v]
        words = ", ".join(f"{k.replace('_', ' ')} {_word(v)}" for k, v in pairs)
        steps.append(f"{name.replace('_', ' ')} ({words})" if words else name.replace("_", " "))
    return ", then ".join(steps)


def trial_params(row: pd.Series) -> dict[str, Any]:
    return {k[len("param."):]: v for k, v in row.items()
            if k.startswith("param.") and v is not None and not (isinstance(v, float) and math.isnan(v))}


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def candidate_rows(run: RunData, frame: pd.DataFrame) -> list[dict[str, str]]:
    """Rows of the candidate table: plan in words, accuracy, latency, memory, size, vs the teacher."""
    base = run.baseline
    rows = []
    for _, row in frame.iterrows():
        acc = row["accuracy"]
        rows.append({
            "trial": f"#{int(row['number'])}",
            "techniques": plain_plan(row["plan"], trial_params(row)),
            "accuracy": _fmt(acc, ".4f"),
            "% of teacher": _fmt(None if acc is None else 100 * acc / base["accuracy"], ".1f"),
            "latency ms (median / p90)": f"{_fmt(row['latency_ms'], '.2f')} / {_fmt(row['latency_p90_ms'], '.2f')}",
            "speed-up": f"{_fmt(row['speedup'], '.2f')}×",
            "memory MB": _fmt(row["memory_mb"], ".1f"),
            "smaller": f"{_fmt(base['memory_mb'] / row['memory_mb'], '.2f')}×",
            "parameters": _fmt(row["parameters"], ",.0f"),
        })
    return rows


def teacher_origin(run: RunData) -> str:
    """Where the teacher came from: the given fine-tuned model, or a fine-tuning made for this run (and how well
    it did on the validation split right after training)."""
    training = (run.record.get("task_info") or {}).get("teacher_training")
    if not training:
        return "the fine-tuned model"
    text = (f"fine-tuned here from {training.get('base_model_name', 'a base model')}: {training.get('epochs')} "
            f"epochs, learning rate {training.get('learning_rate')}, validation accuracy "
            f"{_fmt(training.get('validation_accuracy'), '.4f')}")
    majority = training.get("majority_class_accuracy")
    if majority is not None and training.get("validation_accuracy", 0) <= majority + 0.01:
        text += (f"; no better than always answering the most frequent class ({_fmt(majority, '.4f')}): "
                 "the teacher has not learned the task")
    return text


def baseline_rows(run: RunData) -> list[dict[str, str]]:
    """The teacher and the by-hand references (e.g. int8 alone) in the same columns."""
    base = run.baseline
    rows = [{"trial": "teacher", "techniques": f"none ({teacher_origin(run)})",
             "accuracy": _fmt(base["accuracy"], ".4f"),
             "% of teacher": "100.0",
             "latency ms (median / p90)": f"{base['latency_ms']:.2f} / {base['latency_p90_ms']:.2f}",
             "speed-up": "1.00×", "memory MB": f"{base['memory_mb']:.1f}", "smaller": "1.00×",
             "parameters": _fmt(base.get("parameters"), ",.0f")}]
    for ref in run.references:
        if "error" in ref:
            rows.append({"trial": "by hand", "techniques": f"{ref['name']}: could not run ({ref['error']})"})
            continue
        rows.append({
            "trial": "by hand", "techniques": ref["name"], "accuracy": _fmt(ref["accuracy"], ".4f"),
            "% of teacher": _fmt(100 * ref["accuracy"] / base["accuracy"], ".1f"),
            "latency ms (median / p90)": f"{ref['latency_ms']:.2f} / {ref['latency_p90_ms']:.2f}",
            "speed-up": f"{base['latency_ms'] / ref['latency_ms']:.2f}×",
            "memory MB": f"{ref['memory_mb']:.1f}", "smaller": f"{base['memory_mb'] / ref['memory_mb']:.2f}×",
            "parameters": _fmt(ref.get("parameters"), ",.0f"),
        })
    return rows


def verdict(run: RunData) -> tuple[str, list[str]]:
    """A headline and one line per limit: which limits the recommended model meets, by how much."""
    limits, base = run.limits, run.baseline
    best = run.recommended
    if best is None:
        lines = []
        for near in run.document.get("nearest", []):
            missed = ", ".join(f"{k.replace('_', ' ')} by {v:g}" for k, v in near["missed_by"].items())
            lines.append(f"#{near['trial']} ({plain_plan(near['plan'])}) missed {missed or 'accuracy (not measured)'}")
        return ("No candidate met the limits. Nearest candidates and how far each missed:", lines)
    headline = (f"Ship trial #{int(best['number'])}: {plain_plan(best['plan'], trial_params(best))}. "
                f"Test accuracy {best['accuracy']:.4f} ({100 * best['accuracy'] / base['accuracy']:.1f}% of the "
                f"teacher), {best['latency_ms']:.2f} ms ({best['speedup']:.2f}× faster), "
                f"{best['memory_mb']:.1f} MB ({base['memory_mb'] / best['memory_mb']:.2f}× smaller).")
    lines = []
    if limits.max_latency_ms is not None:
        margin = limits.max_latency_ms - best["latency_ms"]
        lines.append(f"latency {best['latency_ms']:.2f} ms ≤ limit {limits.max_latency_ms:g} ms: "
                     f"meets it with {margin:.2f} ms ({100 * margin / limits.max_latency_ms:.0f}%) to spare")
    if limits.max_memory_mb is not None:
        margin = limits.max_memory_mb - best["memory_mb"]
        lines.append(f"memory {best['memory_mb']:.1f} MB ≤ limit {limits.max_memory_mb:g} MB: "
                     f"meets it with {margin:.1f} MB ({100 * margin / limits.max_memory_mb:.0f}%) to spare")
    if limits.max_accuracy_drop is not None:
        drop = base["val_accuracy"] - best["val_accuracy"]
        lines.append(f"validation accuracy drop {100 * drop:.2f} points ≤ limit "
                     f"{100 * limits.max_accuracy_drop:g} points: meets it with "
                     f"{100 * (limits.max_accuracy_drop - drop):.2f} points to spare")
    return headline, lines


def measurement_note(run: RunData) -> str:
    measure = run.record.get("measure", {})
    if not measure:
        return "Measurement settings were not recorded."
    return (f"Latency: median and p90 of {measure.get('repeats')} timed forward passes after {measure.get('warmup')} "
            f"warm-up passes, batch {measure.get('batch_size')}, sequence length {measure.get('seq_len')}, "
            f"{measure.get('threads')} threads, on the target '{run.record.get('target', '?')}'. Each candidate's "
            "speed-up is against the teacher re-measured right before it on the same machine. Memory: the bytes of the "
            "weights as the target holds them plus the resident-memory growth of inference. Accuracy: computed by "
            "the target's own runtime (what was timed), on the held-out test split; the front and the limits use "
            "the validation split.")


def provenance_rows(run: RunData) -> list[tuple[str, str]]:
    record, machine = run.record, run.record.get("machine", {})
    rows = [
        ("study", f"{record.get('study', run.study.study_name)} ({record.get('storage', 'storage not recorded')})"),
        ("task", f"{record.get('task', '?')}: {record.get('task_description', '')}"),
        ("teacher", teacher_origin(run)),
        ("command", " ".join(record.get("command", [])) or "-"),
        ("date", str(record.get("date", "-"))),
        ("seed / sampler / pruner", f"{record.get('seed')} / {record.get('sampler')} / {record.get('pruner', '-')}"),
        ("trials", f"{len(run.frame)} in the study (budget {record.get('trials', '?')})"),
        ("CPU", f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores, "
                f"{machine.get('threads', '?')} threads used)"),
        ("platform", str(machine.get("platform", "-"))),
        ("versions", ", ".join(f"{k} {machine[k]}" for k in ("python", "torch", "transformers", "optuna",
                                                             "autocompress") if k in machine)),
    ]
    return rows


def outcome_rows(run: RunData) -> list[tuple[str, int, str, str]]:
    """(how it ended, count, meaning, most common reasons) per way a trial can end."""
    rows = []
    for ended, count in sorted(run.ended_counts().items(), key=lambda kv: -kv[1]):
        reasons = run.frame[run.frame["ended"] == ended]["reason"].fillna("").astype(str)
        reasons = reasons[reasons != ""]
        top = "; ".join(f"{r} (×{n})" if n > 1 else r for r, n in reasons.value_counts().head(3).items())
        rows.append((ended, count, ENDED_WORDS.get(ended, ended), top))
    return rows
