"""The free floor: the uncompressed teacher on every runtime available here, no search needed.

A user who exports the teacher to ONNX Runtime int8 or runs it under OpenVINO in bf16 gets a
speed-up for nothing; on an Intel Xeon with AMX that free option (3.6x) beat the best plan a
search on eager PyTorch found (2.7x, DESIGN.md section 5). So once per study, before the first
trial, the teacher is measured on every available target with each post step alone (none, and
every by-hand reference of the POST-stage techniques: int8 dynamic, bf16, static int8), scored
by that target's own runtime, and timed beside the run target's teacher (the same side-by-side
ratio every trial gets). The report lists these rows beside the teacher and the verdict states
the found model's speed-up over the fastest of them that keeps accuracy within the limit.

Rows on the run's own target are the baseline and the by-hand references already measured;
a (target, step) the target refuses is a row with the reason. Stored as the study's user
attribute ``free_floor``. ``--free-floor onnxruntime,openvino`` limits it to those targets and
``--free-floor none`` skips it (the test-suite sets ``AUTOCOMPRESS_FREE_FLOOR=none``: a few
conversions per search would add minutes to CI).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from autocompress.errors import AutocompressError, InputError
from autocompress.search.probe import post_variants
from autocompress.study.floor import FLOOR_ATTR
from autocompress.study.record import TEST_ACCURACY, VAL_ACCURACY
from autocompress.technique import Plan, PlanStep

NO_POST_STEP = "teacher as is"


def _variants(host: Any) -> list[tuple[Any, str, dict[str, Any]]]:
    return [(None, NO_POST_STEP, {}), *post_variants([entry.cls for entry in host.techniques])]


def _from_run_target(env: Any, label: str, references: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The row of the run's own target: the baseline, or the by-hand reference of that label."""
    baseline = env.baseline
    if label == NO_POST_STEP:
        return {TEST_ACCURACY: baseline.test_accuracy, VAL_ACCURACY: baseline.val_accuracy,
                **baseline.measured, "teacher_latency_ms": baseline.measured["latency_ms"]}
    for reference in references:
        if reference["name"] == label:
            if "error" in reference:
                return {"refused": reference["error"]}
            keep = (TEST_ACCURACY, VAL_ACCURACY, "latency_ms", "latency_p90_ms", "memory_mb", "model_mb", "parameters")
            return {**{k: reference[k] for k in keep}, "teacher_latency_ms": baseline.measured["latency_ms"]}
    return None


def validate_free_floor(names: Sequence[str] | None, host: Any) -> None:
    """Refuse unknown target names in ``--free-floor`` before any expensive work."""
    unknown = [name for name in names or () if name not in host.targets]
    if unknown:
        raise InputError(f"--free-floor: unknown target(s) {', '.join(unknown)} "
                         f"(valid: {', '.join(host.targets.names())}, or none)")


def measure_free_floor(study: Any, host: Any, env: Any, references: Sequence[Mapping[str, Any]],
                       names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The teacher with each post step alone on every available target (``names``: those targets
    only; empty: none), once per study."""
    from autocompress.candidate import deploy
    stored = study.user_attrs.get(FLOOR_ATTR)
    if stored is not None:
        return stored
    rows: list[dict[str, Any]] = []
    teacher = env.task.teacher
    for entry in host.targets:
        if names is not None and entry.name not in names:
            continue
        reason = entry.cls.unavailable_reason()
        if reason is not None:
            rows.append({"target": entry.name, "variant": "-", "unavailable": reason})
            continue
        same = entry.cls is type(env.target)
        target = env.target if same else entry.cls()
        for technique, label, values in _variants(host):
            row: dict[str, Any] = {"target": entry.name, "variant": label,
                                   "technique": None if technique is None else technique.name, "config": values}
            if same:
                measured = _from_run_target(env, label, references)
                if measured is not None:
                    rows.append({**row, **measured})
                    continue
            try:
                model = copy.deepcopy(teacher)
                plan = Plan.build([] if technique is None else [PlanStep(technique, technique.make_config(values))])
                deployed = deploy(model, plan, env.context(model))
                scored = target.runtime(deployed)
                validation, test = env.evaluation_sets(env.task.tokenizer)
                metric = env.task.metric
                row.update({VAL_ACCURACY: metric.score(scored, validation), TEST_ACCURACY: metric.score(scored, test)})
                # The run target's teacher right before, as for every trial: drift cancels in the ratio.
                row["teacher_latency_ms"] = env.target.measure(teacher, env.measure_settings).latency_ms
                measurement = target.measure(deployed, env.measure_settings)
                row.update({k: v for k, v in measurement.as_dict().items() if k != "activation_mb"})
            except AutocompressError as exc:
                row = {**row, "refused": str(exc)}
            except Exception as exc:  # the floor is context: it never ends the search
                row = {**row, "refused": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
    for row in rows:
        if "latency_ms" in row:
            row["speedup"] = row["teacher_latency_ms"] / row["latency_ms"]
    study.set_user_attr(FLOOR_ATTR, rows)
    return rows
