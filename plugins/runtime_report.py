"""Report section: this machine's CPU features, what each post step bought here (the probe) and
the free floor (the uncompressed teacher on every runtime available here).

A built-in user of the ``autocompress_report_sections`` hook; it reads only the stored study
(user attributes ``probe`` and ``free_floor``, written by autocompress/search/probe.py and
autocompress/search/floor.py, read through autocompress/study/floor.py) and the run record.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from autocompress import hookimpl
from autocompress.report.facts import ReportSection
from autocompress.search.probe import PROBE_ATTR, Probe
from autocompress.study import floor
from autocompress.study.record import TEST_ACCURACY


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> tuple[str, str]:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td class='{'num' if i in numeric else ''}'>{html.escape(cell)}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    markdown = ("| " + " | ".join(columns) + " |\n|" + "|".join("---:" if i in numeric else "---"
                                                                 for i in range(len(columns))) + "|\n")
    markdown += "".join("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |\n" for row in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>", markdown


def _short(reason: str, limit: int = 160) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def probe_table(probe: Probe) -> tuple[str, str]:
    best = {row.technique: probe.best(row.technique) for row in probe.rows}
    rows = []
    for row in probe.rows:
        if row.speedup is None:
            rows.append([row.label, "-", "-", "-", f"refused: {_short(row.refused or '')}"])
            continue
        note = "starting points end here" if best.get(row.technique) is row else ""
        rows.append([row.label, f"{row.latency_ms:.2f}", f"{row.teacher_latency_ms:.2f}", f"{row.speedup:.2f}×", note])
    return _table(["post step", "latency ms", "teacher ms", "speed-up", "note"], rows, {1, 2, 3})


def floor_table(rows: Sequence[dict], teacher_accuracy: float) -> tuple[str, str]:
    table = []
    for row in rows:
        if "unavailable" in row:
            table.append([row["target"], "-", "-", "-", "-", "-", "-", f"unavailable: {_short(row['unavailable'])}"])
        elif row.get("speedup") is None:
            table.append([row["target"], row["variant"], "-", "-", "-", "-", "-",
                          f"refused: {_short(row.get('refused', ''))}"])
        else:
            table.append([row["target"], row["variant"], f"{row[TEST_ACCURACY]:.4f}",
                          f"{100 * row[TEST_ACCURACY] / teacher_accuracy:.1f}", f"{row['latency_ms']:.2f}",
                          f"{row['speedup']:.2f}×", f"{row['memory_mb']:.1f}", ""])
    return _table(["runtime (target)", "post step", "test accuracy", "% of teacher", "latency ms", "speed-up",
                   "memory MB", "note"], table, {2, 3, 4, 5, 6})


@hookimpl
def autocompress_report_sections(run):
    machine = run.record.get("machine", {})
    features = machine.get("cpu_features", {}).get("summary")
    parts_html = [f"<p>CPU: {html.escape(features or machine.get('cpu', 'not recorded'))}.</p>"]
    parts_md = [f"CPU: {features or machine.get('cpu', 'not recorded')}.", ""]
    stored = run.study.user_attrs.get(PROBE_ATTR)
    if stored is not None:
        probe = Probe.from_dict(stored)
        intro = (f"What each post step alone bought the teacher on the target '{probe.target}' before the first "
                 f"trial (batch {probe.batch_size}, sequence {probe.seq_len}, {probe.threads} threads; medians of "
                 "interleaved runs). The search's starting points end in the fastest step; a step the target "
                 "refused was left out of the search space.")
        table_html, table_md = probe_table(probe)
        parts_html += [f"<h3>Probe</h3><p class='note'>{html.escape(intro)}</p>", table_html]
        parts_md += ["### Probe", "", intro, "", table_md]
    rows = floor.stored_rows(run.study)
    if rows:
        intro = ("The free floor: the uncompressed teacher on every runtime available here, with each post step "
                 "alone, scored by that runtime. Speed-ups are against the run's teacher measured right before "
                 "each row. What the search found should beat the best of these.")
        base = run.baseline
        best = floor.best_free(rows, base["val_accuracy"], run.limits.max_accuracy_drop)
        summary = ("No free option keeps accuracy within the limit." if best is None else
                   f"Best free option within the accuracy limit: the teacher on {floor.describe(best)}, "
                   f"{best['speedup']:.2f}× the teacher.")
        table_html, table_md = floor_table(rows, base[TEST_ACCURACY])
        parts_html += [f"<h3>Free floor</h3><p class='note'>{html.escape(intro)}</p>", table_html,
                       f"<p>{html.escape(summary)}</p>"]
        parts_md += ["### Free floor", "", intro, "", table_md, summary, ""]
    return [ReportSection("This machine and its runtimes", "".join(parts_html), "\n".join(parts_md), order=20)]
