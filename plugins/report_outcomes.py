"""Report section: how every trial ended and why (complete, rejected before training, pruned, failed).

A built-in user of the ``autocompress_report_sections`` hook, written exactly as a third-party
report plugin would be.
"""

from __future__ import annotations

import html

from autocompress import hookimpl
from autocompress.report.facts import ReportSection, outcome_rows


@hookimpl
def autocompress_report_sections(run):
    rows = outcome_rows(run)
    body = "".join(
        f"<tr><td><code>{html.escape(ended)}</code></td><td class='num'>{count}</td><td>{html.escape(meaning)}</td>"
        f"<td>{html.escape(reasons) or '-'}</td></tr>"
        for ended, count, meaning, reasons in rows
    )
    table = ("<div class='scroll'><table><thead><tr><th>ended</th><th>trials</th><th>meaning</th>"
             f"<th>most common reasons</th></tr></thead><tbody>{body}</tbody></table></div>")
    markdown = "| ended | trials | meaning | most common reasons |\n|---|---:|---|---|\n" + "".join(
        f"| `{ended}` | {count} | {meaning} | {(reasons or '-').replace('|', '/')} |\n"
        for ended, count, meaning, reasons in rows
    )
    return [ReportSection("How the trials ended", table, markdown, order=60)]
