"""What the benchmarks that build one RESULTS.md section each share (techniques.py, small_data.py):
the section, printed as it grows and written under ``--out``, and a student made the way the search
makes one (structure steps, a distillation recovery, then post steps on a copy)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.technique import ApplyContext, PlanStep


class Section:
    """A RESULTS.md section: its heading lines, then one table line per measured row."""

    def __init__(self, name: str, lines: list[str]):
        self.name = name
        self.lines = list(lines)
        self.rows: list[dict[str, Any]] = []
        print("\n".join(self.lines), flush=True)

    def add(self, line: str, row: dict[str, Any]) -> None:
        self.lines.append(line)
        self.rows.append(row)
        print(line, flush=True)

    def write(self, out: Path | None, **facts: Any) -> None:
        """``NAME.md`` (what was printed) and ``NAME.json`` (``facts`` and the rows) under ``out``, if given."""
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{self.name}.md").write_text("\n".join(self.lines) + "\n")
        (out / f"{self.name}.json").write_text(json.dumps({**facts, "rows": self.rows}, indent=2))


def recovered(student: nn.Module, structure: list[PlanStep], recovery: dict[str, Any], context: ApplyContext,
              host: Any) -> nn.Module:
    """``structure`` applied to ``student``, then (when there was one) distillation with ``recovery``'s fields."""
    student = apply_steps(student, structure, context)
    if structure:
        distillation = host.techniques["distillation"]
        context.adapter = adapter_for(student, host.architectures)
        student = apply_steps(student, [PlanStep(distillation, distillation.make_config(recovery))], context)
    return student


def deployed(student: nn.Module, post: list[PlanStep], context: ApplyContext) -> nn.Module:
    """``post`` applied to a copy of ``student`` (the float student stays as it was), in eval mode."""
    return apply_steps(copy.deepcopy(student), post, context).eval()
