"""What a report is made of, read from the stored study alone.

A run directory's ``run.json`` only says where the study lives; everything else (the baseline,
the by-hand references, the run record, every trial's record) comes from the Optuna storage, so
a report of a finished, interrupted or multi-worker search is the same report.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from autocompress.errors import InputError
from autocompress.study import results
from autocompress.study.layout import RunLayout
from autocompress.study.limits import Limits
from autocompress.study.record import BASELINE, ENDED, REFERENCES, RUN, TrialRecord
from autocompress.study.storage import open_storage


@dataclass
class RunData:
    """One search as the report sees it."""

    study: optuna.Study
    frame: pd.DataFrame  #: one row per trial (trials.csv)
    document: dict[str, Any]  #: pareto.json: baseline, limits, front, recommended, nearest
    record: dict[str, Any]  #: run.json: command, seed, machine, measurement settings, date
    references: list[dict[str, Any]]  #: by-hand baselines such as int8 alone
    limits: Limits
    prefer: str
    #: Every trial's record by number: the plan as data (``steps``), accuracies, measurement.
    trials: dict[int, TrialRecord]

    @classmethod
    def from_study(cls, study: optuna.Study, limits: Limits | None = None, prefer: str | None = None) -> RunData:
        """Read ``study``; the limits and preference default to those its run record holds."""
        attrs = study.user_attrs
        record = dict(attrs.get(RUN, {}))
        if limits is None:
            limits = Limits(**record["limits"]) if "limits" in record else Limits()
        if prefer is None:
            prefer = record.get("prefer", "latency")
            if prefer not in results.PREFERENCES:
                prefer = "latency"
        records = results.trial_records(study)
        document = results.pareto_document(records, attrs[BASELINE], limits, prefer)
        return cls(study, results.trials_frame(records), document, record, list(attrs.get(REFERENCES, [])), limits,
                   prefer, {r.number: r for r in records})

    @property
    def baseline(self) -> dict[str, Any]:
        return self.document["baseline"]

    @property
    def recommended(self) -> pd.Series | None:
        number = self.document["recommended"]
        if number is None:
            return None
        return self.frame[self.frame["number"] == number].iloc[0]

    @property
    def front(self) -> pd.DataFrame:
        numbers = [row["trial"] for row in self.document["front"]]
        return self.frame.set_index("number").loc[numbers].reset_index()

    @property
    def queued(self) -> int:
        """Trials queued but never started (starting points beyond the budget so far): not part of
        the trials a search ran, and a larger ``--trials`` runs them first."""
        return int((self.frame["state"] == optuna.trial.TrialState.WAITING.name).sum())

    @property
    def ran(self) -> int:
        """Trials that ran or are running (the ``--trials`` budget counts these, queued ones not)."""
        return len(self.frame) - self.queued

    def ended_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frame[ENDED].value_counts().items()}


def storage_of_run_dir(run_dir: Path) -> tuple[str, str]:
    """(storage URL, study name) recorded in a run directory."""
    layout = RunLayout(run_dir)
    if not layout.run_json.is_file():
        raise InputError(f"{run_dir}: no run.json; not a run directory written by 'autocompress search'")
    try:
        record = json.loads(layout.run_json.read_text())
        study_name = record["study"]
    except (ValueError, KeyError) as exc:
        raise InputError(f"{layout.run_json}: unreadable run record ({exc})") from None
    storage = str(record.get("storage", ""))
    if "://" not in storage:  # the default: the SQLite file next to run.json
        if not layout.study_db.is_file():
            raise InputError(f"{run_dir}: no {layout.study_db.name} next to run.json")
        return layout.default_storage_url, study_name
    if "***" in storage:
        raise InputError(f"{run_dir}: the study lives in {storage} (password not recorded); "
                         "pass --storage URL --study NAME")
    return storage, study_name


def load_run(storage_url: str, study_name: str) -> RunData:
    """Read a study from its storage; the error names the study and the studies that exist."""
    storage = open_storage(storage_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name not in names:
        raise InputError(f"no study '{study_name}' in {storage_url.split('@')[-1]} "
                         f"(studies there: {', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=study_name, storage=storage)
    if BASELINE not in study.user_attrs:
        raise InputError(f"study '{study_name}' has no baseline yet: its search stopped before measuring the "
                         "teacher, so there is nothing to report")
    return RunData.from_study(study)
