"""Open a report.html in headless Chromium at a laptop size: screenshot it and check its layout.

    python scripts/report_screenshot.py runs/demo-search/report.html [--width 1280 --height 800]

Writes ``report-<W>x<H>.png`` (what a person sees first) and ``report-full.png`` (the whole page)
next to the report, then prints a JSON layout verdict measured by the browser itself: page
width vs the window (horizontal overflow), elements sticking out of the window, overlapping
blocks, and tables that need horizontal scrolling. Exit code 1 when anything overflows or
overlaps. Needs Chromium (Debian package ``chromium``); tests/test_report.py runs it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>
window.addEventListener('load', () => {
  const width = document.documentElement.clientWidth;
  const result = {window_width: width, page_width: document.documentElement.scrollWidth,
                  sticking_out: [], overlaps: [], scrolling_tables: []};
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                     (el.className ? '.' + String(el.className).split(' ').join('.') : '');
  for (const el of document.querySelectorAll('main *')) {
    const box = el.parentElement.closest('.scroll');
    if (box) continue;  // inside a scroll box, content may be wider by design (checked below)
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > width + 1 || r.left < -1)) result.sticking_out.push(name(el));
  }
  const blocks = [...document.querySelectorAll('main > *, .grid > figure')];
  for (let i = 0; i < blocks.length; i++) for (let j = i + 1; j < blocks.length; j++) {
    const a = blocks[i], b = blocks[j];
    if (a.contains(b) || b.contains(a)) continue;
    const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
    const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
    const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
    if (w > 1 && h > 1) result.overlaps.push(name(a) + ' / ' + name(b));
  }
  for (const el of document.querySelectorAll('.scroll')) {
    if (el.scrollWidth > el.clientWidth + 1) result.scrolling_tables.push(el.scrollWidth + ' > ' + el.clientWidth);
  }
  const out = document.createElement('pre');
  out.id = 'layout-probe';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("Chromium not found: apt-get install chromium")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120, check=True)


def check_layout(report: Path, width: int = 1280, height: int = 800) -> dict:
    """The browser's own measurements of the page at ``width`` x ``height`` (see PROBE)."""
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probed.html"
        probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = _run([f"--window-size={width},{height}", "--virtual-time-budget=5000", "--dump-dom",
                    probed.as_uri()]).stdout
    match = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    if not match:
        raise RuntimeError("the layout probe did not run in Chromium")
    return json.loads(match.group(1).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&"))


def screenshot(report: Path, png: Path, width: int, height: int) -> Path:
    _run([f"--window-size={width},{height}", f"--screenshot={png}", report.resolve().as_uri()])
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    first = screenshot(args.report, args.report.with_name(f"report-{args.width}x{args.height}.png"),
                       args.width, args.height)
    layout = check_layout(args.report, args.width, args.height)
    full_height = 4000  # tall enough for the whole page of a typical run
    full = screenshot(args.report, args.report.with_name("report-full.png"), args.width, full_height)
    layout["screenshots"] = [str(first), str(full)]
    print(json.dumps(layout, indent=2))
    bad = layout["page_width"] > layout["window_width"] or layout["sticking_out"] or layout["overlaps"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
