"""What a search leaves in its run directory (``RunLayout``): run.json, trials.csv, pareto.json, the
kept candidates, best/ and the report. Everything but run.json is computed from the stored study,
so a finished, interrupted or multi-worker search writes the same files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from tqdm.auto import tqdm

from autocompress import __version__
from autocompress.cpu import cpu_features
from autocompress.report import write_report
from autocompress.report.run import RunData
from autocompress.search.settings import SearchSettings
from autocompress.study import results
from autocompress.study.layout import RunLayout
from autocompress.study.record import RUN, Baseline
from autocompress.study.storage import public_url

if TYPE_CHECKING:
    from autocompress.search.environment import LeftOut


@dataclass
class SearchOutcome:
    """What ``run_search`` returns: where the results are, how many trials ran (the ``--trials``
    budget counts them, starting points included), the recommended trial (None when nothing met the
    limits) and the Pareto document (pareto.json)."""

    out_dir: Path
    study_name: str
    trials: int
    recommended: int | None
    document: dict[str, Any]
    #: Starting points queued but not run yet (the budget ended first); a larger ``--trials`` runs them.
    queued: int = 0

    @property
    def found(self) -> bool:
        return self.recommended is not None


def machine_info(threads: int) -> dict[str, Any]:
    """The CPU, thread count and library versions every number of the run was measured with."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import transformers

    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "optuna": optuna.__version__, "autocompress": __version__,
        "cpu_features": cpu_features().as_dict(),  # which post steps can pay off here (autocompress/cpu.py)
    }


def write_run_json(settings: SearchSettings, task: Any, baseline: Baseline, study: optuna.Study,
                   techniques: Sequence[type] = (), left_out: Sequence[LeftOut] = ()) -> None:
    """run.json: how this run was made. The same record is kept in the study (``run`` user attr)
    so a report rendered from the database alone has it too. ``techniques``: those searched;
    ``left_out``: those the default search left out (they do not support the model), with why."""
    record = {
        "study": settings.study_name,
        "storage": public_url(settings.storage_url) if settings.storage else "sqlite (study.db in this directory)",
        "task": settings.task,
        "task_description": task.description,
        "task_fingerprint": task.fingerprint,
        "quality_metric": task.metric.name,
        "task_info": asdict(task.info),
        "target": settings.target,
        "seed": settings.seed,
        "sampler": settings.sampler,
        "pruner": settings.pruner,
        "prefer": settings.prefer,
        "limits": asdict(settings.limits),
        "measure": asdict(settings.measure),
        "trials": settings.trials,
        "timeout_s": settings.timeout_s,
        "techniques": [cls.name for cls in techniques],
        "techniques_left_out": [asdict(item) for item in left_out],
        "command": ["autocompress", *(public_url(a) if "://" in a else a for a in settings.command or sys.argv[1:])],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(settings.measure.threads),
        "baseline": baseline.as_dict(),
    }
    text = json.dumps(record, indent=2, default=str)
    settings.layout.run_json.write_text(text)
    study.set_user_attr(RUN, json.loads(text))


def prune_candidates(study: optuna.Study, layout: RunLayout, prefer: str) -> None:
    """Keep saved candidates only for the Pareto front and the recommended trial (bounded disk)."""
    saved = layout.saved_candidates()
    if not saved:
        return
    records = results.trial_records(study)
    keep = {record.number for record in results.pareto_front(records)}
    best = results.recommend(records, prefer)
    if best is not None:
        keep.add(best.number)
    for number, path in saved.items():
        if number not in keep:
            shutil.rmtree(path, ignore_errors=True)


def write_outputs(study: optuna.Study, settings: SearchSettings, host: Any) -> SearchOutcome:
    """trials.csv, pareto.json, the report and best/ (a copy of the recommended candidate)."""
    layout = settings.layout
    run = RunData.from_study(study, settings.limits, settings.prefer)
    results.write_tables(run.frame, run.document, layout)
    _render_report(run, layout, host)
    recommended = run.document["recommended"]
    source = layout.candidate(recommended) if recommended is not None else None
    if source is not None and source.is_dir():
        shutil.rmtree(layout.best_staging, ignore_errors=True)
        shutil.copytree(source, layout.best_staging)
        shutil.rmtree(layout.best, ignore_errors=True)
        layout.best_staging.rename(layout.best)
    return SearchOutcome(layout.root, settings.study_name, run.ran, recommended, run.document, run.queued)


def _render_report(run: RunData, layout: RunLayout, host: Any) -> None:
    """report.html/report.md; a rendering problem is reported and never costs the results."""
    try:
        files = write_report(run, layout.root, host)
    except Exception as exc:
        tqdm.write(f"warning: the report could not be rendered ({type(exc).__name__}: {exc}); "
                   f"trials.csv and pareto.json are written; retry with 'autocompress report {layout.root}'")
        return
    for error in files.errors:
        tqdm.write(f"warning: {error}")
