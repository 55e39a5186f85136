"""Settings of one search run, validated before anything expensive starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autocompress.errors import InputError
from autocompress.measure import MeasureSettings
from autocompress.study.layout import RunLayout
from autocompress.study.limits import Limits, check_positive
from autocompress.study.results import PREFERENCES
from autocompress.task import TaskOptions

SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("median", "successive-halving", "hyperband", "none")


@dataclass(frozen=True)
class SearchSettings:
    task: str = "demo"
    task_options: TaskOptions = field(default_factory=TaskOptions)
    target: str = "cpu"
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    limits: Limits = field(default_factory=Limits)
    #: Trial budget; None: the task's own default (``TaskProvider.default_trials``, 20 unless it says).
    trials: int | None = None
    timeout_s: float | None = None
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "median"
    prefer: str = "latency"
    techniques: tuple[str, ...] | None = None  # None: every registered technique
    search_space_file: Path | None = None
    out: Path | None = None
    storage: str | None = None
    study: str | None = None
    disabled_plugins: tuple[str, ...] = ()
    #: Evaluate accuracy on at most this many validation/test examples (None: all).
    eval_limit: int | None = None
    progress: bool = True
    #: Seconds between a worker's heartbeats; a trial silent for 4x this is failed and retried.
    heartbeat_s: float = 30.0
    #: A trial running longer than this is failed with that reason and the search goes on.
    trial_timeout_s: float | None = None
    #: A trial whose process memory grows by more than this many MB is failed with that reason.
    trial_memory_mb: float | None = None
    #: Run each trial in a child process (spawned): a crash or a hard memory cap ends only that trial.
    isolate: bool = False
    #: Plans a new study tries first (see search/starting_points.py); None: none.
    starting_points: Path | None = None
    #: Targets the teacher is measured on as the free floor (search/floor.py); None: all available.
    free_floor: tuple[str, ...] | None = None
    #: The command line that started the run, as recorded in run.json and the report.
    command: tuple[str, ...] = ()

    def __post_init__(self):
        if self.trials is not None and (not isinstance(self.trials, int) or isinstance(self.trials, bool)
                                        or self.trials < 1):
            raise InputError(f"--trials must be a whole number >= 1, got {self.trials!r}")
        check_positive("--timeout", self.timeout_s)
        check_positive("--heartbeat", self.heartbeat_s)
        check_positive("--trial-timeout", self.trial_timeout_s)
        check_positive("--trial-memory-mb", self.trial_memory_mb)
        if self.sampler not in SAMPLERS:
            raise InputError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise InputError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.prefer not in PREFERENCES:
            raise InputError(f"--prefer must be one of {', '.join(PREFERENCES)}, got {self.prefer!r}")

    @property
    def study_name(self) -> str:
        return self.study or f"{self.task}-search"

    @property
    def out_dir(self) -> Path:
        return self.out or Path("runs") / self.study_name

    @property
    def layout(self) -> RunLayout:
        """The run directory's files."""
        return RunLayout(self.out_dir)

    @property
    def storage_url(self) -> str:
        return self.storage or self.layout.default_storage_url

    @property
    def owns_storage(self) -> bool:
        """The default SQLite file in the run directory belongs to this run alone."""
        return self.storage is None
