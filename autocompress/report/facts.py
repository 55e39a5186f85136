"""The report's content as plain data (rows of strings); HTML and Markdown only format it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from autocompress.metrics import QualityMetric, metric_named
from autocompress.report.run import RunData
from autocompress.study import floor
from autocompress.study.record import (
    ENDED,
    LATENCIES,
    REASON,
    TEST_ACCURACY,
    VAL_ACCURACY,
    Ended,
    StepRecord,
    TrialRecord,
    quality_name,
)
from autocompress.teacher import how_made, no_better_than_majority, validation_score


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
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plain_plan(steps: Sequence[StepRecord] | None, params: Mapping[str, Any] | None = None) -> str:
    """A stored plan in words: 'ffn pruning (keep fraction 0.3), then quantization (dtype int8)'.

    With ``params`` (the trial's sampled parameters, ``technique.field``), only the searched
    values are listed: fixed settings such as batch sizes are noise in a table.
    """
    if steps is None:
        return "no plan chosen"
    if not steps:
        return "no compression"
    phrases = []
    for step in steps:
        pairs = [(field, value) for field, value in step.config.items()
                 if params is None or f"{step.technique}.{field}" in params]
        words = ", ".join(f"{field.replace('_', ' ')} {_word(value)}" for field, value in pairs)
        name = step.technique.replace("_", " ")
        phrases.append(f"{name} ({words})" if words else name)
    return ", then ".join(phrases)


def trial_plan(record: TrialRecord) -> str:
    """A trial's plan in words, with only its searched values."""
    return plain_plan(record.steps, record.params)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def quality_metric(run: RunData) -> QualityMetric:
    """The metric the run measured, which shows its figures as people read them (perplexity for a
    language model's log-likelihood)."""
    return metric_named(quality_name(run.record))


def _quality(run: RunData, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return quality_metric(run).display(value)


def _share(run: RunData, value: Any, teacher: float) -> str:
    """``value`` as a percentage of the teacher's, when the stored values are what is shown ("-" for a
    log-likelihood shown as perplexity: a ratio of log-likelihoods means nothing to a reader)."""
    metric = quality_metric(run)
    if value is None or metric.shown_as() != metric.name:
        return "-"
    return _fmt(100 * value / teacher, ".1f")


MODE_NAMES = {"prompt": "prompt ms", "token": "ms per token"}


def other_latency_modes(run: RunData) -> list[str]:
    """The latency modes the run timed besides the searched one (a model that generates is timed both
    ways: ``latency_ms.<mode>`` in trials.csv), in the teacher's record."""
    searched = run.record.get("measure", {}).get("latency") or "prompt"
    return [mode for mode in run.baseline.get(LATENCIES) or {} if mode != searched]


def _also_timed(run: RunData, values: Mapping[str, Any]) -> dict[str, str]:
    """The other latency modes' columns of one row: median ms and the speed-up over the teacher's."""
    teacher = run.baseline.get(LATENCIES) or {}
    cells = {}
    for mode in other_latency_modes(run):
        value = values.get(mode)
        cells[MODE_NAMES.get(mode, f"{mode} ms")] = (
            "-" if value is None or pd.isna(value) else f"{value:.2f} ({teacher[mode] / value:.2f}×)")
    return cells


def candidate_rows(run: RunData, frame: pd.DataFrame) -> list[dict[str, str]]:
    """Rows of the candidate table: plan in words, test accuracy, latency (and the other latency mode of a
    model that generates), memory, size, vs the teacher."""
    base = run.baseline
    rows = []
    for _, row in frame.iterrows():
        acc = row[TEST_ACCURACY]
        also = {mode: row.get(f"latency_ms.{mode}") for mode in other_latency_modes(run)}
        rows.append({
            "trial": f"#{int(row['number'])}",
            "techniques": trial_plan(run.trials[int(row["number"])]),
            "test accuracy": _quality(run, acc),
            "% of teacher": _share(run, acc, base[TEST_ACCURACY]),
            "latency ms (median / p90)": f"{_fmt(row['latency_ms'], '.2f')} / {_fmt(row['latency_p90_ms'], '.2f')}",
            "speed-up": f"{_fmt(row['speedup'], '.2f')}×",
            **_also_timed(run, also),
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
    text = f"{how_made(training)}, {validation_score(training)}"
    majority = no_better_than_majority(training)
    if majority is not None:
        text += (f"; no better than always answering the most frequent class ({_fmt(majority, '.4f')}): "
                 "the teacher has not learned the task")
    return text


def baseline_rows(run: RunData) -> list[dict[str, str]]:
    """The teacher and the by-hand references (e.g. int8 alone) in the same columns."""
    base = run.baseline
    rows = [{"trial": "teacher", "techniques": f"none ({teacher_origin(run)})",
             "test accuracy": _quality(run, base[TEST_ACCURACY]),
             "% of teacher": _share(run, base[TEST_ACCURACY], base[TEST_ACCURACY]),
             "latency ms (median / p90)": f"{base['latency_ms']:.2f} / {base['latency_p90_ms']:.2f}",
             "speed-up": "1.00×", **_also_timed(run, base.get(LATENCIES) or {}),
             "memory MB": f"{base['memory_mb']:.1f}", "smaller": "1.00×",
             "parameters": _fmt(base.get("parameters"), ",.0f")}]
    rows += free_floor_rows(run)
    for ref in run.references:
        if "error" in ref:
            rows.append({"trial": "by hand", "techniques": f"{ref['name']}: could not run ({ref['error']})"})
            continue
        rows.append({
            "trial": "by hand", "techniques": ref["name"], "test accuracy": _quality(run, ref[TEST_ACCURACY]),
            "% of teacher": _share(run, ref[TEST_ACCURACY], base[TEST_ACCURACY]),
            "latency ms (median / p90)": f"{ref['latency_ms']:.2f} / {ref['latency_p90_ms']:.2f}",
            "speed-up": f"{base['latency_ms'] / ref['latency_ms']:.2f}×",
            "memory MB": f"{ref['memory_mb']:.1f}", "smaller": f"{base['memory_mb'] / ref['memory_mb']:.2f}×",
            "parameters": _fmt(ref.get("parameters"), ",.0f"),
        })
    return rows


def free_floor_rows(run: RunData) -> list[dict[str, str]]:
    """The teacher on the other runtimes (search/floor.py), in the candidate table's columns; the
    run's own target is already there as the teacher and the by-hand rows."""
    base, own = run.baseline, run.record.get("target")
    rows = []
    for row in floor.measured_rows(floor.stored_rows(run.study)):
        if row["target"] == own:
            continue
        rows.append({
            "trial": "free floor", "techniques": f"teacher on {floor.describe(row)}",
            "test accuracy": _quality(run, row[TEST_ACCURACY]),
            "% of teacher": _share(run, row[TEST_ACCURACY], base[TEST_ACCURACY]),
            "latency ms (median / p90)": f"{row['latency_ms']:.2f} / {row['latency_p90_ms']:.2f}",
            "speed-up": f"{row['speedup']:.2f}×", "memory MB": f"{row['memory_mb']:.1f}",
            "smaller": f"{base['memory_mb'] / row['memory_mb']:.2f}×",
            "parameters": _fmt(row.get("parameters"), ",.0f"),
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
            plan = plain_plan(run.trials[near["trial"]].steps)
            lines.append(f"#{near['trial']} ({plan}) missed {missed or 'accuracy (not measured)'}")
        return ("No candidate met the limits. Nearest candidates and how far each missed:", lines)
    test_accuracy = best[TEST_ACCURACY]
    metric = quality_metric(run)
    share = _share(run, test_accuracy, base[TEST_ACCURACY])
    versus = (f"{share}% of the teacher" if share != "-" else f"teacher {metric.display(base[TEST_ACCURACY])}")
    headline = (f"Ship trial #{int(best['number'])}: {trial_plan(run.trials[int(best['number'])])}. "
                f"Test {metric.shown_as()} {metric.display(test_accuracy)} ({versus}), "
                f"{best['latency_ms']:.2f} ms ({best['speedup']:.2f}× faster), "
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
    if limits.max_perplexity_increase is not None:
        increase = math.exp(base[VAL_ACCURACY] - best[VAL_ACCURACY]) - 1  # perplexity ratio - 1
        lines.append(f"validation perplexity {metric.display(best[VAL_ACCURACY])} vs the teacher's "
                     f"{metric.display(base[VAL_ACCURACY])}: {100 * increase:+.2f}% ≤ limit "
                     f"+{100 * limits.max_perplexity_increase:g}%: meets it with "
                     f"{100 * (limits.max_perplexity_increase - increase):.2f} points to spare")
    elif limits.max_accuracy_drop is not None:
        drop = base[VAL_ACCURACY] - best[VAL_ACCURACY]
        lines.append(f"validation {quality_name(run.record)} drop {100 * drop:.2f} points ≤ limit "
                     f"{100 * limits.max_accuracy_drop:g} points: meets it with "
                     f"{100 * (limits.max_accuracy_drop - drop):.2f} points to spare")
    over_floor = floor.comparison(floor.stored_rows(run.study), float(best["speedup"]), base["val_accuracy"],
                                  limits.max_accuracy_drop)
    if over_floor is not None:
        lines.append(f"free floor: {over_floor}")
    return headline, lines


def measurement_note(run: RunData) -> str:
    measure = run.record.get("measure", {})
    if not measure:
        return "Measurement settings were not recorded."
    if measure.get("latency") == "token":
        timed = (f"Latency: milliseconds per generated token, median and p90 of {measure.get('repeats')} greedy "
                 f"decoding steps with the KV cache after {measure.get('warmup')} warm-up steps and a prompt of "
                 f"{measure.get('seq_len')} tokens, batch {measure.get('batch_size')}")
        working = "the growth of memory in use over a prompt and generation (the KV cache included)"
    else:
        timed = (f"Latency: median and p90 of {measure.get('repeats')} timed forward passes after "
                 f"{measure.get('warmup')} warm-up passes, batch {measure.get('batch_size')}, sequence length "
                 f"{measure.get('seq_len')}")
        working = "the growth of memory in use during inference"
    return (f"{timed}, {measure.get('threads')} threads, on the target '{run.record.get('target', '?')}'. Each "
            "candidate's speed-up is against the teacher re-measured right before it on the same machine. Memory: "
            f"the bytes of the weights as the target holds them plus {working}. "
            f"{quality_metric(run).shown_as().capitalize()}: computed by the target's own runtime (what was timed), "
            "on the held-out test split; the front and the limits use the validation split.")


def provenance_rows(run: RunData) -> list[tuple[str, str]]:
    record, machine = run.record, run.record.get("machine", {})
    rows = [
        ("study", f"{record.get('study', run.study.study_name)} ({record.get('storage', 'storage not recorded')})"),
        ("task", f"{record.get('task', '?')}: {record.get('task_description', '')}"),
        ("teacher", teacher_origin(run)),
        ("command", " ".join(record.get("command", [])) or "-"),
        ("date", str(record.get("date", "-"))),
        ("seed / sampler / pruner", f"{record.get('seed')} / {record.get('sampler')} / {record.get('pruner', '-')}"),
        ("trials", f"{run.ran} run (budget {record.get('trials', '?')})"
                   + (f"; {run.queued} starting points queued, not run" if run.queued else "")),
        ("techniques", _searched_techniques(record)),
        ("CPU", f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores, "
                f"{machine.get('threads', '?')} threads used)"),
        ("CPU features", machine.get("cpu_features", {}).get("summary", "not recorded")),
        ("platform", str(machine.get("platform", "-"))),
        ("versions", ", ".join(f"{k} {machine[k]}" for k in ("python", "torch", "transformers", "optuna",
                                                             "autocompress") if k in machine)),
    ]
    return rows


def _searched_techniques(record: dict) -> str:
    """The techniques searched, and those left out because they do not support the model (with why)."""
    searched = record.get("techniques")
    if searched is None:  # a run recorded before the list was
        return "not recorded"
    text = ", ".join(searched) or "none"
    left_out = record.get("techniques_left_out") or []
    if left_out:
        text += "; left out, not supporting this model: " + "; ".join(
            f"{item['technique']} ({item['reason']})" for item in left_out)
    return text


def _meaning(ended: str) -> str:
    try:
        return Ended(ended).meaning
    except ValueError:  # a trial still running or waiting
        return ended


def outcome_rows(run: RunData) -> list[tuple[str, int, str, str]]:
    """(how it ended, count, meaning, most common reasons) per way a trial can end."""
    rows = []
    for ended, count in sorted(run.ended_counts().items(), key=lambda kv: -kv[1]):
        reasons = run.frame[run.frame[ENDED] == ended][REASON].fillna("").astype(str)
        reasons = reasons[reasons != ""]
        top = "; ".join(f"{r} (×{n})" if n > 1 else r for r, n in reasons.value_counts().head(3).items())
        rows.append((ended, count, _meaning(ended), top))
    return rows
