"""Print a command the README shows, so CI runs exactly what a new user is told to run.

    python scripts/readme_command.py setup    # the set-up command of "Quick start"
    python scripts/readme_command.py test     # the test command

A command is the fenced code block that follows a ``<!-- command: NAME -->`` marker in README.md
(the marker is an HTML comment: invisible on the rendered page). Exit 2 when there is no such block.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_command(name: str, text: str | None = None) -> str:
    """The commands of the block marked ``name``, joined into one line with ``&&``."""
    text = README.read_text(encoding="utf-8") if text is None else text
    match = re.search(rf"<!-- command: {re.escape(name)} -->\s*```\w*\n(.*?)```", text, flags=re.S)
    if match is None:
        raise LookupError(f"{README.name} has no fenced block after '<!-- command: {name} -->'")
    lines = [line.strip() for line in match.group(1).splitlines()]
    return " && ".join(line for line in lines if line and not line.startswith("#"))


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(readme_command(sys.argv[1]))
    except LookupError as exc:
        print(f"readme_command: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
