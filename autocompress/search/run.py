"""``run_search``: the one entry point of a search.

Validate the settings against the plugins (cheap mistakes cost seconds, not a teacher
fine-tuning), open the study, load the task, measure the baseline and the by-hand references
once per study, run the trials still missing from the budget, write the outputs.

Storage is Optuna's RDB storage: a SQLite file in the run directory by default, any Optuna URL
with ``--storage`` (several workers share one study through it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
import warnings
from typing import Any

import optuna
from tqdm.auto import tqdm

from autocompress.arch import adapter_class_for
from autocompress.errors import InputError
from autocompress.measure import long_lived_objects
from autocompress.metrics import LogLikelihood
from autocompress.plugin_manager import Host, build_host
from autocompress.search.environment import (
    TrialEnvironment,
    by_hand_references,
    make_environment,
    measure_baseline,
    technique_spaces,
)
from autocompress.search.floor import measure_free_floor, validate_free_floor
from autocompress.search.isolate import InChildProcess, host_recipe, load_limit
from autocompress.search.objective import Objective
from autocompress.search.outputs import SearchOutcome, prune_candidates, write_outputs, write_run_json
from autocompress.search.probe import adapt_starting_points, probe_study, quality_keeper, restrict_spaces
from autocompress.search.resume import RunLock, check_run_dir, counted_trials, repair_interrupted_trials
from autocompress.search.sampling import make_sampler
from autocompress.search.settings import SearchSettings
from autocompress.search.starting_points import default_file, enqueue_starting_points, validate_starting_points
from autocompress.study.record import (
    BASELINE,
    DIRECTIONS,
    LAST_RUN_SECONDS,
    METRIC_NAMES,
    REFERENCES,
    TEST_ACCURACY,
    Baseline,
    TrialRecord,
)
from autocompress.study.storage import open_storage
from autocompress.task import load_task, unlabeled_texts


def run_search(settings: SearchSettings, host: Host | None = None) -> SearchOutcome:
    """Run (or resume) the search ``settings`` describe with the plugins of ``host`` (default: the
    installed ones); returns where the results are and what was found. KeyboardInterrupt after
    the results so far are written, when the user interrupted."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar and trials.csv say it better
    host = host or build_host(disabled=settings.disabled_plugins)
    # Cheap validation first: every mistake below costs seconds, not a teacher fine-tuning.
    if settings.task not in host.tasks:
        raise InputError(f"unknown task '{settings.task}' (valid: {', '.join(host.tasks.names())})")
    if settings.target not in host.targets:
        raise InputError(f"unknown target '{settings.target}' (valid: {', '.join(host.targets.names())})")
    unavailable = host.targets[settings.target].unavailable_reason()
    if unavailable:
        raise InputError(f"target '{settings.target}' cannot be used here: {unavailable}")
    techniques, spaces = technique_spaces(host, settings)
    validate_free_floor(settings.free_floor, host)
    recipe = host_recipe(host) if settings.isolate else None  # refused now if children could not rebuild it
    registered = set(host.techniques.names())
    validate_starting_points(settings.starting_points, techniques, spaces, registered)
    provider = host.tasks[settings.task](settings.task_options)
    provider.validate()
    unlabeled = unlabeled_texts(settings.task_options)
    metric = provider.quality_metric()  # a metric the task does not know is refused before anything loads
    if settings.limits.max_perplexity_increase is not None and not isinstance(metric, LogLikelihood):
        raise InputError(f"--max-perplexity-increase limits a language model's perplexity; task '{settings.task}' "
                         f"measures {metric.name} (use --max-accuracy-drop, or --task lm for a causal LM on text)")
    if settings.measure.latency is None:  # the task knows what latency means for its models
        settings = dataclasses.replace(settings, measure=dataclasses.replace(settings.measure,
                                                                             latency=provider.default_latency))
    if settings.measure.latency not in host.targets[settings.target].latency_modes:
        raise InputError(f"--latency {settings.measure.latency}: target '{settings.target}' times "
                         f"{', '.join(host.targets[settings.target].latency_modes)} latency only")
    if settings.trials is None:  # the task knows what a sensible budget costs on its model
        settings = dataclasses.replace(settings, trials=provider.default_trials)
    if provider.model_type() is not None:  # an unsupported family is refused before the model loads
        adapter_class_for(provider.model_type(), host.architectures)
    layout = settings.layout
    check_run_dir(layout, settings.study_name, None, settings.measure)
    if not settings.owns_storage:  # a bad database URL leaves no empty run directory behind
        storage = open_storage(settings.storage_url, settings.heartbeat_s)
    layout.root.mkdir(parents=True, exist_ok=True)
    if settings.owns_storage:
        storage = open_storage(settings.storage_url, settings.heartbeat_s)

    with RunLock(layout), contextlib.ExitStack() as stack:
        study = optuna.create_study(
            study_name=settings.study_name, storage=storage, directions=list(DIRECTIONS),
            sampler=make_sampler(settings.sampler, settings.seed), load_if_exists=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(METRIC_NAMES))
        loading = time.monotonic()
        task = load_task(provider, unlabeled)
        # The task and everything loaded so far live for the whole run: no garbage collection (one
        # before every measurement, from the baseline on) walks them again.
        stack.enter_context(long_lived_objects())
        check_run_dir(layout, settings.study_name, task.fingerprint)

        def baseline_for(target, validation, test) -> Baseline:
            """Measured once per study; every later worker and resume reads it back."""
            stored = study.user_attrs.get(BASELINE)
            if stored is not None:
                return Baseline.from_dict(stored)
            baseline = measure_baseline(task.teacher, target, settings.measure, validation, test, task.metric)
            study.set_user_attr(BASELINE, baseline.as_dict())
            return baseline

        env = make_environment(settings, host, task, techniques, spaces, baseline_for)
        loaded_s = time.monotonic() - loading
        for left_out in env.left_out:  # the default search goes on without them
            tqdm.write(left_out.notice(), file=sys.stderr)
        write_run_json(settings, task, env.baseline, study, env.techniques, env.left_out)
        if settings.owns_storage:
            repair_interrupted_trials(study)
        if REFERENCES not in study.user_attrs:
            study.set_user_attr(REFERENCES, by_hand_references(env, host))
        # What each post step buys here decides the starting points and drops refused choices
        # (search/probe.py); the teacher on every runtime is the free floor (search/floor.py).
        probe = probe_study(study, env)
        adapt = None
        if probe is not None:
            env.spaces = restrict_spaces(env.spaces, probe)
            # The built-in plans end in the post step that pays off here and keeps the quality limit on its
            # own (its by-hand reference, scored above); a user's own file is tried as written.
            if settings.starting_points == default_file():
                keeps = quality_keeper(study.user_attrs[REFERENCES], env.baseline.val_accuracy,
                                       env.limits.max_accuracy_drop)
                adapt = functools.partial(adapt_starting_points, probe=probe, spaces=env.spaces, keeps_quality=keeps,
                                          techniques={cls.name: cls for cls in env.techniques})
        enqueue_starting_points(study, settings.starting_points, env.techniques, env.spaces, registered, adapt,
                                unsupported=[left_out.technique for left_out in env.left_out])
        measure_free_floor(study, host, env, study.user_attrs[REFERENCES], settings.free_floor)
        remaining = settings.trials - counted_trials(study)
        interrupted = False
        if remaining > 0:
            objective = Objective(env)
            if recipe is not None:
                objective = Objective(env, InChildProcess(env, settings, recipe, load_limit(loaded_s)))
            interrupted = _optimize(study, objective, env, settings, host, remaining)
        outcome = write_outputs(study, settings, host)
        if interrupted:
            raise KeyboardInterrupt
        return outcome


def _optimize(study: optuna.Study, objective: Objective, env: TrialEnvironment, settings: SearchSettings,
              host: Host, remaining: int) -> bool:
    """Run the trials; returns True when the user interrupted (results are still written)."""
    bar = tqdm(total=remaining, desc="trials", unit="trial", disable=not settings.progress)
    best: dict[str, Any] = {}

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if counted_trials(study) >= settings.trials:  # other workers may have filled the budget
            study.stop()
        row = TrialRecord.from_trial(trial).row()
        for error in host.trial_finished(trial.number, row, settings.layout.root):
            tqdm.write(error)
        if row["feasible"] and (not best or row["latency_ms"] < best["latency_ms"]):
            best.update(row)
        prune_candidates(study, settings.layout, settings.prefer)
        bar.update(1)
        postfix = f"#{trial.number} {row['ended']}"
        if best:
            postfix += f" | best feasible: {best['latency_ms']:.1f} ms, test accuracy {best[TEST_ACCURACY]:.3f}"
        bar.set_postfix_str(postfix)

    # Each trial ends with a full garbage collection (a trial's model copies can sit in reference
    # cycles). With torch and transformers loaded that pass walks ~450k objects, about 0.25 s a
    # trial; freezing what exists now (modules, the task, the teacher, the environment: alive for
    # the whole run) leaves it only the objects the trials made.
    started = time.monotonic()
    try:
        with long_lived_objects():
            study.optimize(
                objective, n_trials=remaining, timeout=settings.timeout_s, catch=(Exception,),
                callbacks=[after_trial], gc_after_trial=True,
            )
    except KeyboardInterrupt:
        tqdm.write("interrupted: writing the results so far (Ctrl-C again to quit at once)")
        return True
    finally:
        bar.close()
        study.set_user_attr(LAST_RUN_SECONDS, round(time.monotonic() - started, 1))
    return False
