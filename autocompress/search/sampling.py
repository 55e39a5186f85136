"""A plan as Optuna parameters, and back: the one encoding of the search space, and the sampler.

A technique alone is switched by ``use.<name>`` (true/false). Techniques that conflict are one
choice, ``use.<a>|<b>`` in {none, a, b}, so each gets an equal share of trials and a conflicting
pair is never even sampled. A chosen technique's searched fields are ``<name>.<field>``.

``sample_plan`` reads parameters from a trial (drawing them as it goes); ``plan_params`` is its
inverse: the parameters under which ``sample_plan`` picks a given plan (the starting points are
queued with it). ``plan_values`` gives a plan back in the form ``plan_params`` takes.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from autocompress.errors import InputError
from autocompress.search_space import SearchSpace
from autocompress.technique import Plan, PlanStep, Technique

#: A plan as plain values: technique name -> {searched field: value}.
PlanValues = Mapping[str, Mapping[str, Any]]


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``--sampler`` names."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    # Constraints reach the sampler through trial.set_constraint (Optuna 5's core API). The space
    # is conditional (a technique's fields exist only when it is on): group=True models each set
    # of fields that occur together jointly, instead of only the use.* switches every trial has.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True, group=True)


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """``trial``'s value for parameter ``name`` drawn from ``distribution``."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high,
                                 step=distribution.step, log=distribution.log)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high,
                                   step=distribution.step, log=distribution.log)
    raise TypeError(f"unsupported distribution {distribution!r} for {name}")


def conflict_groups(techniques: list[type[Technique]]) -> list[list[type[Technique]]]:
    """Techniques linked by declared conflicts (either direction), each group ordered by stage, name."""
    names = {cls.name: cls for cls in techniques}
    group_of = {name: {name} for name in names}
    for cls in techniques:
        for other in cls.conflicts & names.keys():
            merged = group_of[cls.name] | group_of[other]
            for name in merged:
                group_of[name] = merged
    groups = {frozenset(g) for g in group_of.values()}
    ordered = [sorted((names[n] for n in g), key=lambda c: (c.stage, c.name)) for g in groups]
    return sorted(ordered, key=lambda g: (g[0].stage, g[0].name))


def _switch(group: list[type[Technique]]) -> str:
    return f"use.{'|'.join(cls.name for cls in group)}"


def sample_fields(trial: optuna.Trial, technique: type[Technique], space: SearchSpace) -> dict[str, Any]:
    """The technique's searched fields drawn from ``space``: the unconditional ones, then each
    conditional one (``Technique.conditions``) only when the drawn values (or the Config's defaults,
    for a field not searched) use it."""
    values = {f: suggest(trial, f"{technique.name}.{f}", d) for f, d in space.items() if f not in technique.conditions}
    known = {**dataclasses.asdict(technique.make_config({})), **values}
    for field_name, distribution in space.items():
        if field_name in technique.conditions and technique.uses_field(field_name, known):
            values[field_name] = suggest(trial, f"{technique.name}.{field_name}", distribution)
    return values


def sample_plan(trial: optuna.Trial, techniques: list[type[Technique]], spaces: Mapping[str, SearchSpace]) -> Plan:
    """Choose which techniques are on and their parameters (see the module's docstring)."""
    steps: list[PlanStep] = []
    chosen: set[str] = set()
    for group in conflict_groups(techniques):
        if len(group) == 1:
            picked = group[0] if trial.suggest_categorical(_switch(group), [True, False]) else None
        else:
            choice = trial.suggest_categorical(_switch(group), ["none", *(cls.name for cls in group)])
            picked = next((cls for cls in group if cls.name == choice), None)
        if picked is None or not picked.requires <= chosen:
            continue
        values = sample_fields(trial, picked, spaces[picked.name])
        steps.append(PlanStep(picked, picked.make_config(values)))
        chosen.add(picked.name)
    return Plan.build(steps)


def plan_params(plan: PlanValues, techniques: list[type[Technique]], spaces: Mapping[str, SearchSpace],
                where: str) -> dict[str, Any]:
    """The trial parameters under which ``sample_plan`` picks exactly ``plan``: its techniques on, the
    others off, the given fields fixed (each must lie in the field's search space; fields left out
    are drawn as usual). InputError naming ``where`` for a plan ``sample_plan`` could not pick."""
    by_name = {cls.name: cls for cls in techniques}
    params: dict[str, Any] = {}
    for group in conflict_groups(techniques):
        names = [cls.name for cls in group]
        picked = [n for n in names if n in plan]
        if len(picked) > 1:
            raise InputError(f"{where}: {' and '.join(picked)} conflict; a plan can use only one of them")
        if len(group) == 1:
            params[_switch(group)] = bool(picked)
        else:
            params[_switch(group)] = picked[0] if picked else "none"
    for name, fields in plan.items():
        missing = by_name[name].requires - plan.keys()
        if missing:
            raise InputError(f"{where}: {name} requires {', '.join(sorted(missing))}")
        for field_name, value in fields.items():
            if by_name[name].uses_field(field_name, fields) is False:
                condition = " and ".join(f"{other} is {' or '.join(map(str, allowed))}"
                                         for other, allowed in by_name[name].conditions[field_name].items())
                raise InputError(f"{where}: {name}.{field_name} is used only when {condition}; leave it out")
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


def plan_values(plan: Plan, spaces: Mapping[str, SearchSpace]) -> dict[str, dict[str, Any]]:
    """``plan`` as the values ``plan_params`` takes: each technique's searched fields it uses."""
    values = {}
    for step in plan.steps:
        config = dataclasses.asdict(step.config)
        values[step.technique.name] = {f: config[f] for f in spaces[step.technique.name]
                                       if step.technique.uses_field(f, config)}
    return values


def plan_of_params(params: Mapping[str, Any], techniques: list[type[Technique]],
                   spaces: Mapping[str, SearchSpace]) -> Plan:
    """The plan ``sample_plan`` picks under fixed ``params`` (a trial's, replayed elsewhere)."""
    return sample_plan(optuna.trial.FixedTrial(dict(params)), techniques, spaces)
