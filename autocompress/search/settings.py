"""Settings of one search run, validated before anything expensive starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from autocompress.errors import InputError
from autocompress.measure import MeasureSettings
from autocompress.task import TaskOptions

SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("median", "successive-halving", "hyperband", "none")
PREFERENCES = ("latency", "memory", "accuracy")


def _positive(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a number, got {value!r}")
    if value <= 0:
        raise InputError(f"{name} must be greater than 0, got {value}")


@dataclass(frozen=True)
class Limits:
    """Hard limits; a candidate is feasible when it meets all of them."""

    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    #: Largest allowed drop in accuracy versus the teacher, as a fraction (0.01 = 1 point).
    max_accuracy_drop: float | None = 0.01

    def __post_init__(self):
        _positive("--max-latency-ms", self.max_latency_ms)
        _positive("--max-memory-mb", self.max_memory_mb)
        drop = self.max_accuracy_drop
        if drop is not None and (
            isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1
        ):
            raise InputError(
                f"--max-accuracy-drop must be a fraction in [0, 1) (0.01 = 1 point), got {drop!r}"
            )

    def describe(self) -> str:
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        if self.max_memory_mb is not None:
            parts.append(f"memory <= {self.max_memory_mb:g} MB")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop * 100:g} points")
        return ", ".join(parts) or "no limits"


@dataclass(frozen=True)
class SearchSettings:
    task: str = "demo"
    task_options: TaskOptions = field(default_factory=TaskOptions)
    target: str = "cpu"
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    limits: Limits = field(default_factory=Limits)
    trials: int = 20
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
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1:
            raise InputError(f"--trials must be a whole number >= 1, got {self.trials!r}")
        _positive("--timeout", self.timeout_s)
        _positive("--heartbeat", self.heartbeat_s)
        _positive("--trial-timeout", self.trial_timeout_s)
        _positive("--trial-memory-mb", self.trial_memory_mb)
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
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    @property
    def owns_storage(self) -> bool:
        """The default SQLite file in the run directory belongs to this run alone."""
        return self.storage is None
