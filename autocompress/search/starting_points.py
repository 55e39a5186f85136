"""Plans a new study tries first, before the sampler's own choices (warm start).

A sampler starts blind: TPE's first trials are random, and in a space of nine techniques a
random draw rarely combines the few moves known to pay off on CPUs (int8 with a recovery step,
moderate FFN pruning, half depth with distillation). The starting points are those
combinations, written declaratively (``search_spaces/_starting_points.yaml`` by default, or the
user's file): each names techniques and fixes some of their fields; fields left out are sampled
as usual. They are ordinary trials of the budget, recorded like any other, and they give the
sampler real observations to model from the first trials on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from autocompress.errors import InputError
from autocompress.search.objective import conflict_groups
from autocompress.search_space import SearchSpace, read_yaml

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


def plan_params(plan: Mapping[str, Mapping[str, Any]], techniques: list[type], spaces: Mapping[str, SearchSpace],
                where: str) -> dict[str, Any]:
    """The trial parameters under which ``sample_plan`` picks exactly ``plan``: its techniques on, the
    others off, the given fields fixed (each must lie in the field's search space)."""
    params: dict[str, Any] = {}
    for group in conflict_groups(techniques):
        names = [cls.name for cls in group]
        picked = [n for n in names if n in plan]
        if len(picked) > 1:
            raise InputError(f"{where}: {' and '.join(picked)} conflict; a plan can use only one of them")
        if len(group) == 1:
            params[f"use.{names[0]}"] = bool(picked)
        else:
            params[f"use.{'|'.join(names)}"] = picked[0] if picked else "none"
    for name, fields in plan.items():
        for field_name, value in fields.items():
            distribution = spaces[name].get(field_name)
            if distribution is None:
                raise InputError(f"{where}: '{name}.{field_name}' is not a searched field "
                                 f"(searched: {', '.join(spaces[name]) or 'none'})")
            try:
                inside = distribution._contains(distribution.to_internal_repr(value))
            except (TypeError, ValueError):
                inside = False
            if not inside:
                raise InputError(f"{where}: {name}.{field_name} = {value!r} is outside its search space "
                                 f"{distribution!r}")
            params[f"{name}.{field_name}"] = value
    return params


def enqueue_starting_points(study: optuna.Study, path: Path | None, techniques: list[type],
                            spaces: Mapping[str, SearchSpace], registered: set[str],
                            adapt: Callable[[list[dict[str, dict[str, Any]]]], list[dict[str, dict[str, Any]]]]
                            | None = None) -> int:
    """Queue the starting points once per study (the first worker does it); plans that use a
    technique this search leaves out are skipped. ``adapt`` rewrites the plans first (the probe
    ends them in the post step that pays off on this machine, search/probe.py). Returns how many
    were queued."""
    if path is None or study.user_attrs.get(ENQUEUED) is not None or study.get_trials(deepcopy=False):
        return 0
    searched = {cls.name for cls in techniques}
    queued = 0
    plans = load_starting_points(path, registered)
    if adapt is not None:
        plans = adapt(plans)
    for index, plan in enumerate(plans, start=1):
        if not set(plan) <= searched:
            continue
        study.enqueue_trial(plan_params(plan, techniques, spaces, f"{path}: plan {index}"),
                            user_attrs={"starting_point": index})
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
