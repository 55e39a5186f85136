"""Where everything of one run lives: the one owner of a run directory's file names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CANDIDATE_PREFIX = "trial-"


@dataclass(frozen=True)
class RunLayout:
    """The files of a run directory (``--out``). Every module names them through this object."""

    root: Path

    @property
    def study_db(self) -> Path:
        """The default SQLite study (when no ``--storage`` is given)."""
        return self.root / "study.db"

    @property
    def default_storage_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def pareto_json(self) -> Path:
        return self.root / "pareto.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def plot(self, name: str) -> Path:
        return self.plots / f"{name}.png"

    @property
    def candidates(self) -> Path:
        """Saved candidates, one directory per kept trial."""
        return self.root / "candidates"

    def candidate(self, number: int) -> Path:
        """The saved weights of trial ``number``."""
        return self.candidates / f"{CANDIDATE_PREFIX}{number:05d}"

    def saved_candidates(self) -> dict[int, Path]:
        """Trial number -> directory of every candidate directory present."""
        found = {}
        if self.candidates.is_dir():
            for path in self.candidates.glob(f"{CANDIDATE_PREFIX}*"):
                number = path.name[len(CANDIDATE_PREFIX):]
                if number.isdigit():
                    found[int(number)] = path
        return dict(sorted(found.items()))

    @property
    def best(self) -> Path:
        """A copy of the recommended candidate."""
        return self.root / "best"

    @property
    def best_staging(self) -> Path:
        """Where ``best/`` is assembled before it replaces the old one in one rename."""
        return self.root / ".best-staging"
