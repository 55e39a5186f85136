"""Search spaces in Optuna's distribution short form, loaded from YAML and validated.

A technique's space maps each searchable field of its ``Config`` to a distribution::

    keep_fraction: {type: float, low: 0.3, high: 0.9, step: 0.05}
    dtype: {type: categorical, choices: [int8, bf16]}
    rank: {type: int, low: 4, high: 64, log: true}

Defaults for built-ins live in ``search_spaces/<technique>.yaml``; a run may override any of
them with a YAML file mapping technique names to such field maps.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from autocompress.errors import InputError, SearchSpaceError

SearchSpace = dict[str, BaseDistribution]

_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


def _number(value: Any, where: str, key: str, integer: bool) -> float | int:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise SearchSpaceError(f"{where}: '{key}' must be {kind}, got {value!r}")
    return value


def parse_distribution(spec: Any, where: str) -> BaseDistribution:
    """Turn one short-form mapping into an Optuna distribution; ``where`` prefixes errors."""
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(
            f"{where}: expected a mapping like {{type: float, low: 0.1, high: 0.9}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in _KEYS:
        raise SearchSpaceError(f"{where}: 'type' must be one of {', '.join(_KEYS)}, got {kind!r}")
    unknown = set(spec) - _KEYS[kind]
    if unknown:
        raise SearchSpaceError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} for type {kind} "
            f"(valid: {', '.join(sorted(_KEYS[kind]))})"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
        for choice in choices:
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise SearchSpaceError(f"{where}: choice {choice!r} is not a bool, number or string")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"{where}: 'choices' has duplicates: {choices!r}")
        return CategoricalDistribution(choices)
    integer = kind == "int"
    for key in ("low", "high"):
        if key not in spec:
            raise SearchSpaceError(f"{where}: missing '{key}' for type {kind}")
    low = _number(spec["low"], where, "low", integer)
    high = _number(spec["high"], where, "high", integer)
    if low > high:
        raise SearchSpaceError(f"{where}: low ({low}) is greater than high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{where}: 'log' must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, where, "step", integer)
        if step <= 0:
            raise SearchSpaceError(f"{where}: 'step' must be positive, got {step}")
        if log:
            raise SearchSpaceError(f"{where}: 'step' cannot be combined with log: true")
        _check_steps_reach_high(low, high, step, int if integer else float, where)
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: log: true needs low > 0, got {low}")
    try:
        if integer:
            return IntDistribution(low, high, log=log, step=step or 1)
        return FloatDistribution(float(low), float(high), log=log, step=step)
    except ValueError as exc:
        raise SearchSpaceError(f"{where}: {exc}") from None


def _check_steps_reach_high(low: float, high: float, step: float, kind: type, where: str) -> None:
    """Refuse a range that ``step`` does not divide: Optuna would quietly lower ``high``."""
    span, unit = decimal.Decimal(str(high)) - decimal.Decimal(str(low)), decimal.Decimal(str(step))
    if span % unit == 0:
        return
    below = decimal.Decimal(str(low)) + (span // unit) * unit
    raise SearchSpaceError(
        f"{where}: high ({high}) is not low ({low}) plus a whole number of steps ({step}), so {high} "
        f"could never be drawn; use high: {kind(below)} or {kind(below + unit)}"
    )


def parse_space(doc: Any, technique: type, source: str) -> SearchSpace:
    """Parse a field -> short-form mapping for ``technique``; fields must exist in its Config."""
    if not isinstance(doc, Mapping):
        raise SearchSpaceError(f"{source}: technique '{technique.name}' expects a mapping of fields")
    fields = searchable_fields(technique)
    space: SearchSpace = {}
    for field, spec in doc.items():
        if field not in fields:
            raise SearchSpaceError(
                f"{source}: unknown field '{field}' for technique '{technique.name}' "
                f"(fields: {', '.join(fields)})"
            )
        space[field] = parse_distribution(spec, f"{source}: {technique.name}.{field}")
    return space


def check_space(space: Any, technique: type, source: str) -> SearchSpace:
    """Check a space declared in code: a mapping of ``Config`` field names to Optuna distributions."""
    if not isinstance(space, Mapping):
        raise SearchSpaceError(
            f"{source}: technique '{technique.name}' must declare a mapping of Config fields to Optuna "
            f"distributions, got {type(space).__name__}"
        )
    fields = searchable_fields(technique)
    for field, distribution in space.items():
        if field not in fields:
            raise SearchSpaceError(
                f"{source}: unknown field '{field}' for technique '{technique.name}' "
                f"(fields: {', '.join(fields)})"
            )
        if not isinstance(distribution, BaseDistribution):
            raise SearchSpaceError(
                f"{source}: {technique.name}.{field} must be an Optuna distribution, got {distribution!r}"
            )
    return dict(space)


def searchable_fields(technique: type) -> list[str]:
    return [f.name for f in dataclasses.fields(technique.Config)]


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SearchSpaceError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SearchSpaceError(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise SearchSpaceError(f"{path}: not valid YAML{where}: {problem}") from None


def builtin_space_file(name: str) -> Path | None:
    """The packaged ``search_spaces/<name>.yaml``, if there is one."""
    path = Path(str(resources.files("autocompress.search_spaces"))) / f"{name}.yaml"
    return path if path.is_file() else None


def load_overrides(path: Path, known: Mapping[str, type]) -> dict[str, SearchSpace]:
    """Load a user file mapping technique names to field spaces; names must be registered."""
    doc = read_yaml(path)
    if doc is None:
        return {}
    return parse_overrides(doc, known, str(path))


def parse_overrides(doc: Any, known: Mapping[str, type], source: str) -> dict[str, SearchSpace]:
    if not isinstance(doc, Mapping):
        raise SearchSpaceError(f"{source}: expected a mapping of technique names to fields")
    result: dict[str, SearchSpace] = {}
    for name, fields in doc.items():
        if name not in known:
            raise SearchSpaceError(
                f"{source}: unknown technique '{name}' (valid: {', '.join(sorted(known))})"
            )
        result[name] = parse_space(fields, known[name], source)
        _check_values(result[name], known[name], source)
    return result


def _check_values(space: SearchSpace, technique: type, source: str) -> None:
    """Every bound and choice must be a value the technique's Config accepts (the other fields at
    their defaults): a space the technique cannot use fails now, not in every trial of the search."""
    for field, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            values = distribution.choices
        else:
            values = (distribution.low, distribution.high)
        for value in values:
            try:
                technique.make_config({field: value})
            except InputError as exc:
                raise SearchSpaceError(f"{source}: {technique.name}.{field}: the value {value!r} is not accepted "
                                       f"({exc})") from None
