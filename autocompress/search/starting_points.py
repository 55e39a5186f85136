"""Plans a new study tries first, before the sampler's own choices (warm start).

A sampler starts blind: TPE's first trials are random, and in a space of nine techniques a
random draw rarely combines the few moves known to pay off on CPUs (int8 with a recovery step,
moderate FFN pruning, half depth with distillation). The starting points are those
combinations, written declaratively (``search_spaces/_starting_points.yaml`` by default, or the
user's file): each names techniques and fixes some of their fields; fields left out are sampled
as usual. They are ordinary trials of the budget, recorded like any other, and they give the
sampler real observations to model from the first trials on. Each is queued as the parameters
under which the sampler's own encoding picks it (``sampling.plan_params``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from autocompress.errors import InputError
from autocompress.search.sampling import plan_params
from autocompress.search_space import SearchSpace, read_yaml
from autocompress.study.record import STARTING_POINT

DEFAULT_FILE = "_starting_points.yaml"
ENQUEUED = "starting_points_enqueued"


def default_file() -> Path:
    return Path(str(resources.files("autocompress.search_spaces"))) / DEFAULT_FILE


def load_starting_points(path: Path, registered: set[str]) -> list[dict[str, dict[str, Any]]]:
    """Read a list of plans ({technique: {field: value}}); names must be registered techniques."""
    doc = read_yaml(path)
    if doc is None:
        return []
    if not isinstance(doc, list) or not all(isinstance(p, Mapping) for p in doc):
        raise InputError(f"{path}: expected a list of plans, each a mapping of technique names to fields")
    plans = []
    for index, plan in enumerate(doc, start=1):
        for name, fields in plan.items():
            if name not in registered:
                raise InputError(f"{path}: plan {index}: unknown technique '{name}' "
                                 f"(valid: {', '.join(sorted(registered))})")
            if fields is not None and not isinstance(fields, Mapping):
                raise InputError(f"{path}: plan {index}: '{name}' must map fields to values, got {fields!r}")
        plans.append({name: dict(fields or {}) for name, fields in plan.items()})
    return plans


def without_techniques(plans: list[dict[str, dict[str, Any]]], removed: Collection[str], techniques: list[type]
                       ) -> list[dict[str, dict[str, Any]]]:
    """``plans`` without the techniques ``removed`` (they do not support the model): the rest of a
    plan is still worth trying. A plan left empty, one whose other techniques require a removed one,
    and a plan already listed go."""
    requires = {cls.name: cls.requires for cls in techniques}
    kept: list[dict[str, dict[str, Any]]] = []
    for plan in plans:
        rest = {name: dict(fields) for name, fields in plan.items() if name not in removed}
        if any(requires.get(name, frozenset()) & set(removed) for name in rest):
            continue
        if rest and rest not in kept:
            kept.append(rest)
    return kept


def enqueue_starting_points(study: optuna.Study, path: Path | None, techniques: list[type],
                            spaces: Mapping[str, SearchSpace], registered: set[str],
                            adapt: Callable[[list[dict[str, dict[str, Any]]]], list[dict[str, dict[str, Any]]]]
                            | None = None, unsupported: Collection[str] = ()) -> int:
    """Queue the starting points once per study (the first worker does it). ``unsupported``
    techniques (they do not support the model) are removed from the plans (``without_techniques``);
    plans that use a technique ``--techniques`` leaves out are skipped. ``adapt`` rewrites the plans
    then (the probe ends them in the post step that pays off on this machine, search/probe.py).
    Returns how many were queued."""
    if path is None or study.user_attrs.get(ENQUEUED) is not None or study.get_trials(deepcopy=False):
        return 0
    searched = {cls.name for cls in techniques}
    queued = 0
    plans = load_starting_points(path, registered)
    if unsupported:
        plans = without_techniques(plans, unsupported, techniques)
    if adapt is not None:
        plans = adapt(plans)
    for index, plan in enumerate(plans, start=1):
        if not set(plan) <= searched:
            continue
        study.enqueue_trial(plan_params(plan, techniques, spaces, f"{path}: plan {index}"),
                            user_attrs={STARTING_POINT: index})
        queued += 1
    study.set_user_attr(ENQUEUED, queued)
    return queued


def validate_starting_points(path: Path | None, techniques: list[type], spaces: Mapping[str, SearchSpace],
                             registered: set[str]) -> None:
    """Check the file before any expensive work (the same checks enqueueing makes)."""
    if path is None:
        return
    searched = {cls.name for cls in techniques}
    for index, plan in enumerate(load_starting_points(path, registered), start=1):
        if set(plan) <= searched:
            plan_params(plan, techniques, spaces, f"{path}: plan {index}")
