"""The hard limits of a search and how far a candidate is from each: one gap computation, used by
the trial's feasibility gate, the sampler's constraints, the results and the nearest candidates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from autocompress.errors import InputError

#: Constraint names, as stored with each trial (``trial.constraints``) and shown in pareto.json.
LATENCY, MEMORY, ACCURACY_DROP = "latency_ms", "memory_mb", "accuracy_drop"


def check_positive(name: str, value: float | None) -> None:
    """InputError naming the option unless ``value`` is None or a finite number > 0."""
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
    #: Largest allowed drop in validation accuracy versus the teacher, as a fraction (0.01 = 1 point).
    max_accuracy_drop: float | None = 0.01
    #: A language model's limit as people say it (``--max-perplexity-increase``: 0.1 = perplexity at
    #: most 10% above the teacher's); ``max_accuracy_drop`` then holds the same limit on the stored
    #: log-likelihood, ``log(1 + r)`` nats (``perplexity_drop_limit``).
    max_perplexity_increase: float | None = None

    def __post_init__(self):
        increase = self.max_perplexity_increase
        if increase is not None and (isinstance(increase, bool) or not isinstance(increase, (int, float))
                                     or not 0 < increase < math.e - 1):
            raise InputError(f"--max-perplexity-increase must be a fraction in (0, {math.e - 1:.3f}) (0.1: perplexity "
                             f"at most 10% above the teacher's), got {increase!r}")
        check_positive("--max-latency-ms", self.max_latency_ms)
        check_positive("--max-memory-mb", self.max_memory_mb)
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
        if self.max_perplexity_increase is not None:
            parts.append(f"perplexity increase <= {self.max_perplexity_increase * 100:g}%")
        elif self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop * 100:g} points")
        return ", ".join(parts) or "no limits"

    def gaps(self, latency_ms: float | None = None, memory_mb: float | None = None,
             accuracy_drop: float | None = None) -> dict[str, float]:
        """How far each known value is from its limit: > 0 missed by that much, <= 0 met (Optuna's
        constraint convention). A limit not set, or a value not known (None or NaN), has no entry."""
        gaps = {}
        for name, value, limit in ((LATENCY, latency_ms, self.max_latency_ms),
                                   (MEMORY, memory_mb, self.max_memory_mb),
                                   (ACCURACY_DROP, accuracy_drop, self.max_accuracy_drop)):
            if limit is not None and value is not None and not (isinstance(value, float) and math.isnan(value)):
                gaps[name] = value - limit
        return gaps


def perplexity_drop_limit(max_perplexity_increase: float) -> float:
    """The drop limit on the mean log-likelihood per token that keeps perplexity within
    ``1 + max_perplexity_increase`` times the teacher's: ``log(1 + r)``."""
    return math.log1p(max_perplexity_increase)


def describe_gaps(gaps: Mapping[str, float]) -> str:
    """The missed limits in words ("latency_ms over its limit by 3.2"); "" when none is missed."""
    return "; ".join(f"{name} over its limit by {value:.4g}" for name, value in gaps.items() if value > 0)
