"""report.html, report.md and the PNG plots of one search, rendered from its stored study.

``write_report(run, out_dir, host)`` writes:

- ``report.html``: one self-contained page (inline CSS, plots embedded as data URIs, no
  script, no external URL) that opens offline;
- ``report.md``: the same essentials for a pull request, images referenced relatively;
- ``plots/*.png``: the figures on their own.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autocompress.errors import MissingPackage
from autocompress.report import facts
from autocompress.report.run import RunData, load_run, storage_of_run_dir
from autocompress.study import results
from autocompress.study.layout import RunLayout
from autocompress.technique import Stage

__all__ = ["RunData", "ReportFiles", "load_run", "storage_of_run_dir", "write_report"]

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:1.5em;margin:.2em 0 .1em}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}
.sub{color:#555;margin:0 0 1em}
.verdict{background:#fff;border-left:6px solid #2ca02c;padding:12px 16px;box-shadow:0 1px 2px #0001}
.verdict.none{border-left-color:#d62728}.verdict p{margin:.2em 0;font-weight:600}
.verdict ul{margin:.4em 0 0 1.1em;padding:0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px}
figure{margin:0;background:#fff;padding:8px;box-shadow:0 1px 2px #0001}
figure img{width:100%;height:auto;display:block}
figure.wide{max-width:980px}figure.narrow{max-width:720px}
figcaption{font-size:.85em;color:#555;margin-top:4px}
.scroll{overflow-x:auto;background:#fff;box-shadow:0 1px 2px #0001}
table{border-collapse:collapse;width:100%;font-size:.86em}
th,td{padding:5px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f2f2f2;white-space:nowrap}td.num{text-align:right;white-space:nowrap}
tr.best td{background:#fff6d5}tr.ref td{color:#555;font-style:italic}
code{font-size:.92em}.note{font-size:.85em;color:#555}
"""

NUMERIC = {"test accuracy", "% of teacher", "latency ms (median / p90)", "speed-up", "memory MB", "smaller",
           "parameters"}


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table_html(rows: list[dict[str, str]], columns: list[str], classes: list[str],
                headers: Mapping[str, str] | None = None) -> str:
    """``headers``: the heading shown for a column, when not its name."""
    head = "".join(f"<th>{html.escape((headers or {}).get(c, c))}</th>" for c in columns)
    body = "".join(
        f"<tr class='{cls}'>" + "".join(
            f"<td class='{'num' if c in NUMERIC else ''}'>{html.escape(row.get(c, ''))}</td>" for c in columns
        ) + "</tr>"
        for row, cls in zip(rows, classes, strict=True)
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _table_md(rows: list[dict[str, str]], columns: list[str], headers: Mapping[str, str] | None = None) -> str:
    rule = "|" + "|".join("---:" if c in NUMERIC else "---" for c in columns) + "|"
    lines = ["| " + " | ".join((headers or {}).get(c, c) for c in columns) + " |", rule]
    lines += ["| " + " | ".join(row.get(c, "").replace("|", "/") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plotting():
    """``autocompress.report.plots``; MissingPackage (exit code 2, saying what to install) when the
    plotting library is not installed, instead of a traceback."""
    try:
        from autocompress.report import plots
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] == "autocompress":
            raise
        raise MissingPackage.for_import(exc, "the report's plots") from None
    return plots


def write_report(run: RunData, out_dir: Path, host: Any) -> ReportFiles:
    """Render the report of ``run`` into ``out_dir`` (created if needed)."""
    plots = plotting()

    layout = RunLayout(out_dir)
    layout.plots.mkdir(parents=True, exist_ok=True)
    limits = run.limits
    figures = {
        "accuracy_vs_latency": plots.tradeoff(run, "latency_ms", "latency, median (ms)", limits.max_latency_ms),
        "accuracy_vs_memory": plots.tradeoff(run, "memory_mb", "memory (MB)", limits.max_memory_mb),
        "progress": plots.progress(run),
    }
    # Training settings cannot change latency or memory: ranked for accuracy only.
    recovery = {entry.name for entry in host.techniques if entry.cls.stage == Stage.RECOVER}
    importances = plots.importances(run, recovery)
    if not importances.table.empty:
        figures["importances"] = plots.png(plots.importances_figure(importances))
    files = ReportFiles(layout.report_html, layout.report_md)
    for name, png in figures.items():
        files.plots[name] = layout.plot(name)
        files.plots[name].write_bytes(png)

    sections, files.errors = host.report_sections(run)
    headline, verdict_lines = facts.verdict(run)
    also_timed = [facts.MODE_NAMES.get(mode, f"{mode} ms") for mode in facts.other_latency_modes(run)]
    columns = ["trial", "techniques", "test accuracy", "% of teacher", "latency ms (median / p90)", "speed-up",
               *also_timed, "memory MB", "smaller", "parameters"]
    # The run's metric (accuracy unless the task measures another): the quality column says which.
    headers = {"test accuracy": f"test {facts.quality_metric(run).shown_as()}"}
    front_rows = facts.candidate_rows(run, run.front)
    best = run.document["recommended"]
    classes = ["best" if r["trial"] == f"#{best}" else "" for r in front_rows]
    base_rows = facts.baseline_rows(run)
    all_rows = front_rows + base_rows
    all_classes = classes + ["ref"] * len(base_rows)
    title = f"autocompress report: {run.record.get('study', run.study.study_name)}"
    rendered = time.strftime("%Y-%m-%d %H:%M")
    hv = float(results.hypervolume_history(run.frame, run.baseline)["hypervolume"].iloc[-1]) \
        if len(run.frame) else 0.0

    page = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><main>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p class='sub'>Limits: {html.escape(limits.describe())} · {len(run.frame)} trials · "
            f"task {html.escape(str(run.record.get('task', '?')))} · rendered {rendered}</p>",
            f"<section class='verdict{'' if best is not None else ' none'}' id='verdict'>"
            f"<p>{html.escape(headline)}</p><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines) + "</ul></section>",
            "<h2>Accuracy against latency and memory</h2><div class='grid'>",
            f"<figure>{_img(figures['accuracy_vs_latency'], 'validation accuracy vs latency')}<figcaption>Every "
            "measured trial by its <b>validation</b> accuracy, the split the accuracy limit and the Pareto front use "
            "(the table gives test accuracy); the front circled, the recommended model starred, the teacher and "
            "by-hand baselines marked, the limits dashed (a limit far off the data is marked at the edge)."
            "</figcaption></figure>",
            f"<figure>{_img(figures['accuracy_vs_memory'], 'validation accuracy vs memory')}<figcaption>The same "
            "trials against memory (weights + inference working memory).</figcaption></figure></div>",
            "<h2>Pareto-optimal candidates</h2>",
            _table_html(all_rows, columns, all_classes, headers),
            f"<p class='note'>{html.escape(facts.measurement_note(run))} The highlighted row is the recommended "
            f"model (preference: {html.escape(run.prefer)}). Italic rows are the teacher and simple baselines a "
            "person would try by hand, evaluated without search (their speed-up is against the teacher measured at the "
            "start of the run).</p>",
            "<h2>Search progress</h2>",
            f"<figure class='wide'>{_img(figures['progress'], 'search progress')}"
            "<figcaption>Best feasible latency and the "
            f"hypervolume of the feasible set (objectives normalised by the teacher; final {hv:.4f}).</figcaption>"
            "</figure>"]
    page.append("<h2>What mattered</h2>")
    if "importances" in figures:
        page.append(f"<figure class='narrow'>{_img(figures['importances'], 'parameter importances')}"
                    f"<figcaption>{html.escape(importances.note)}</figcaption></figure>")
    else:
        page.append(f"<p class='note'>{html.escape(importances.note)}</p>")
    for section in sections:
        page.append(f"<h2>{html.escape(section.title)}</h2>{section.html}")
    for error in files.errors:
        page.append(f"<p class='note'>{html.escape(error)}</p>")
    page.append("<h2>Provenance</h2><div class='scroll'><table><tbody>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.provenance_rows(run)
    ) + "</tbody></table></div></main></body></html>")
    files.html.write_text("\n".join(page), encoding="utf-8")

    md = [f"# {title}", "", f"Limits: {limits.describe()} · {len(run.frame)} trials · rendered {rendered}", "",
          f"**{headline}**", "", *[f"- {line}" for line in verdict_lines], "",
          "## Pareto-optimal candidates", "", _table_md(all_rows, columns, headers), facts.measurement_note(run), "",
          f"![accuracy vs latency]({layout.plot('accuracy_vs_latency').relative_to(layout.root)})",
          f"![accuracy vs memory]({layout.plot('accuracy_vs_memory').relative_to(layout.root)})",
          "", "## Search progress", "", f"Final hypervolume (teacher-normalised): {hv:.4f}", "",
          f"![progress]({layout.plot('progress').relative_to(layout.root)})", ""]
    md += ["## What mattered", "", importances.note, ""]
    if "importances" in figures:
        md += [_table_md([{"parameter": name, **{k: "-" if pd.isna(v) else f"{v:.3f}" for k, v in row.items()}}
                          for name, row in importances.table.iterrows()], ["parameter", *importances.table.columns]),
               ""]
    for section in sections:
        md += [f"## {section.title}", "", section.markdown, ""]
    md += ["## Provenance", "", "| | |", "|---|---|", *[f"| {k} | {v.replace('|', '/')} |"
                                                      for k, v in facts.provenance_rows(run)], ""]
    files.markdown.write_text("\n".join(md), encoding="utf-8")
    return files
