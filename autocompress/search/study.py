"""Running a search: validate, load the task, measure the baseline, optimise, write the outputs.

Storage is Optuna's RDB storage: a SQLite file in the run directory by default, any Optuna URL
with ``--storage``. Re-running the same command loads the same study and runs only the trials
still missing from the budget; a trial left RUNNING by a killed process is marked FAIL
("interrupted") and its parameters are queued again.
"""

from __future__ import annotations

import copy
import fcntl
import gc
import json
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from tqdm.auto import tqdm

from autocompress import __version__
from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps, deploy
from autocompress.errors import InputError
from autocompress.plugin_manager import Host, build_host
from autocompress.search import results
from autocompress.search.fidelity import make_pruner
from autocompress.search.isolate import IsolatedObjective, host_recipe, load_limit
from autocompress.search.objective import INTERRUPTED, Baseline, Objective, TrialEnvironment
from autocompress.search.settings import SearchSettings
from autocompress.search.starting_points import enqueue_starting_points, validate_starting_points
from autocompress.search_space import load_overrides
from autocompress.technique import Plan, PlanStep, Stage
from autocompress.training import accuracy, encode

DIRECTIONS = ("maximize", "minimize", "minimize")  # accuracy, latency_ms, memory_mb


@dataclass
class SearchOutcome:
    out_dir: Path
    study_name: str
    trials: int
    recommended: int | None
    document: dict[str, Any]

    @property
    def found(self) -> bool:
        return self.recommended is not None


def resolve_techniques(host: Host, names: tuple[str, ...] | None) -> list[type]:
    if names is None:
        return [entry.cls for entry in host.techniques]
    unknown = [n for n in names if n not in host.techniques]
    if unknown:
        raise InputError(
            f"unknown technique(s) {', '.join(unknown)} (valid: {', '.join(host.techniques.names())})"
        )
    return [host.techniques[n] for n in names]


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
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


# Processes that open a fresh database at the same moment (workers started together, or a
# dashboard opened as a search starts) race to create Optuna's tables: the losers see "table
# already exists", a duplicate schema-version row or a locked SQLite file. The winner finishes the
# schema within moments, after which opening again succeeds.
SCHEMA_RACE = ("already exists", "unique constraint failed", "duplicate key", "database is locked")
SCHEMA_RACE_TRIES = 8


def _open_rdb_storage(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    import sqlalchemy.exc

    for attempt in range(1, SCHEMA_RACE_TRIES):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.DatabaseError as exc:
            if not any(sign in str(exc).lower() for sign in SCHEMA_RACE):
                raise
            time.sleep(0.1 * attempt)
    return optuna.storages.RDBStorage(url, **kwargs)  # the last try: its error is the one reported


def make_storage(url: str, heartbeat_s: float = 30.0) -> optuna.storages.BaseStorage:
    if "://" not in url:
        raise InputError(f"--storage {url!r} is not a database URL (e.g. sqlite:///study.db, "
                         "postgresql://user@127.0.0.1/db)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _open_rdb_storage(
                url,
                heartbeat_interval=max(1, round(heartbeat_s)),
                grace_period=max(2, round(4 * heartbeat_s)),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
    except Exception as exc:  # sqlalchemy and driver errors: bad URL, server down, missing driver
        detail = " ".join(str(exc).split("\n(Background on this error")[0].split())
        detail = detail.replace(url, public_url(url))
        raise InputError(f"--storage {public_url(url)!r}: cannot open ({type(exc).__name__}: {detail}); "
                         "expected a reachable "
                         "database URL such as sqlite:///runs/study.db or postgresql://user:password@host/db"
                         ) from None


class RunLock:
    """An exclusive lock on the run directory: one process owns the default SQLite study."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / ".lock"
        self.handle = None

    def __enter__(self) -> RunLock:
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{self.path.parent}: another autocompress search is using this run directory; "
                             "use --storage with a database server to run several workers") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def fail_interrupted_trials(study: optuna.Study) -> int:
    """Mark trials a killed process left RUNNING as FAIL and queue their parameters again."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "ended", INTERRUPTED)
        storage.set_trial_user_attr(trial._trial_id, "reason", "the search process ended during this trial")
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        count += 1
    return count


COUNTED = ("complete", "infeasible-before-training", "pruned", "failed")


def counted_trials(study: optuna.Study) -> int:
    """Trials that used up the budget: those that ended on their own (complete, infeasible, pruned,
    failed). Trials cut short by a dead process are retried instead, so they do not count."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("ended") in COUNTED)


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import transformers

    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "optuna": optuna.__version__, "autocompress": __version__,
    }


def check_run_dir(out_dir: Path, study_name: str, fingerprint: str | None) -> None:
    """Refuse a run directory that holds a different study (never mix two searches)."""
    run_json = out_dir / "run.json"
    if not run_json.is_file():
        return
    previous = json.loads(run_json.read_text())
    if previous.get("study") != study_name:
        raise InputError(f"{out_dir} holds study '{previous.get('study')}', not '{study_name}'; "
                         "choose another --out or the same --study")
    if fingerprint is not None and previous.get("task_fingerprint") not in (None, fingerprint):
        raise InputError(f"{out_dir} holds a search of a different model/data "
                         f"({previous.get('task_fingerprint')} vs {fingerprint}); choose another --out")


def run_search(settings: SearchSettings, host: Host | None = None) -> SearchOutcome:
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
    recipe = host_recipe(host) if settings.isolate else None  # refused now if children could not rebuild it
    registered = set(host.techniques.names())
    validate_starting_points(settings.starting_points, techniques, spaces, registered)
    provider = host.tasks[settings.task](settings.task_options)
    provider.validate()
    out_dir = settings.out_dir
    check_run_dir(out_dir, settings.study_name, None)
    if not settings.owns_storage:  # a bad database URL leaves no empty run directory behind
        storage = make_storage(settings.storage_url, settings.heartbeat_s)
    out_dir.mkdir(parents=True, exist_ok=True)
    if settings.owns_storage:
        storage = make_storage(settings.storage_url, settings.heartbeat_s)

    with RunLock(out_dir):
        study = optuna.create_study(
            study_name=settings.study_name, storage=storage, directions=list(DIRECTIONS),
            sampler=make_sampler(settings.sampler, settings.seed), load_if_exists=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["accuracy", "latency_ms", "memory_mb"])
        enqueue_starting_points(study, settings.starting_points, techniques, spaces, registered)
        loading = time.monotonic()
        task = provider.load()
        check_run_dir(out_dir, settings.study_name, task.fingerprint)
        env = make_environment(
            settings, host, task, techniques, spaces,
            lambda target, validation, test: _baseline(study, task.teacher, target, settings, validation, test))
        loaded_s = time.monotonic() - loading
        write_run_json(out_dir, settings, task, env.baseline, study)
        if settings.owns_storage:
            fail_interrupted_trials(study)
        _references(study, host, env)
        remaining = settings.trials - counted_trials(study)
        interrupted = False
        if remaining > 0:
            objective = Objective(env)
            if recipe is not None:
                objective = IsolatedObjective(env, settings, recipe, load_limit(loaded_s))
            interrupted = _optimize(study, objective, settings, host, remaining)
        outcome = write_outputs(study, settings, env.baseline.as_dict(), out_dir, host)
        if interrupted:
            raise KeyboardInterrupt
        return outcome


def technique_spaces(host: Host, settings: SearchSettings) -> tuple[list[type], dict[str, Any]]:
    """The techniques to search and their search spaces (with ``--search-space`` overrides)."""
    techniques = resolve_techniques(host, settings.techniques)
    spaces = {cls.name: cls.search_space() for cls in techniques}
    if settings.search_space_file is not None:
        # Checked against every registered technique: one file can serve runs with different --techniques.
        overrides = load_overrides(settings.search_space_file, {entry.name: entry.cls for entry in host.techniques})
        for name, fields in overrides.items():
            if name in spaces:
                spaces[name] = {**spaces[name], **fields}
    return techniques, spaces


def make_environment(settings: SearchSettings, host: Host, task, techniques: list[type], spaces: dict[str, Any],
                     baseline_for) -> TrialEnvironment:
    """What every trial shares, from the loaded task. ``baseline_for(target, validation, test)``
    gives the teacher's baseline: measured once per study by the search process, read back from
    the study by an isolated trial's child process (which builds its environment with this too)."""
    adapter = adapter_for(task.teacher, host.architectures)
    for cls in techniques:
        reason = cls.unsupported_reason(adapter)
        if reason:
            raise InputError(f"technique '{cls.name}' does not support this model: {reason}")
    target = host.targets[settings.target]()
    max_length = settings.task_options.max_length
    data = task.data
    limit = settings.eval_limit or max(len(data.validation), len(data.test))
    validation = encode(task.tokenizer, data.validation.head(limit), max_length)
    test = encode(task.tokenizer, data.test.head(limit), max_length)
    return TrialEnvironment(
        task=task, validation=validation, test=test, baseline=baseline_for(target, validation, test),
        target=target, measure_settings=settings.measure, limits=settings.limits, techniques=techniques,
        spaces=spaces, architectures=host.architectures, candidates_dir=settings.out_dir / "candidates",
        seed=settings.seed, max_length=max_length, pruner=make_pruner(settings.pruner),
        trial_timeout_s=settings.trial_timeout_s, trial_memory_mb=settings.trial_memory_mb,
    )


def _baseline(study, teacher, target, settings, validation, test) -> Baseline:
    stored = study.user_attrs.get("baseline")
    if stored is not None:
        return Baseline.from_dict(stored)
    scored = target.runtime(teacher)
    baseline = Baseline(accuracy(scored, validation), accuracy(scored, test),
                        target.measure(teacher, settings.measure))
    study.set_user_attr("baseline", baseline.as_dict())
    return baseline


def _references(study: optuna.Study, host: Host, env: TrialEnvironment) -> list[dict[str, Any]]:
    """Measure the simple by-hand baselines techniques offer (e.g. int8 alone), once per study."""
    stored = study.user_attrs.get("references")
    if stored is not None:
        return stored
    rows = []
    for entry in host.techniques:
        for label, values in entry.cls.references.items():
            plan = Plan.build([PlanStep(entry.cls, entry.cls.make_config(values))])
            row: dict[str, Any] = {"name": label, "plan": plan.describe()}
            try:
                model = copy.deepcopy(env.task.teacher)
                context = env.context(model)
                model = apply_steps(model, plan.at(Stage.STRUCTURE), context)
                deployed = deploy(model, plan, context)
                validation, test = env.evaluation_sets(context.tokenizer)
                scored = env.target.runtime(deployed)
                row.update(val_accuracy=accuracy(scored, validation), accuracy=accuracy(scored, test),
                           **env.target.measure(deployed, env.measure_settings).as_dict())
            except Exception as exc:  # a baseline that cannot run is reported, never fatal
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
    study.set_user_attr("references", rows)
    return rows


def _optimize(study, objective, settings, host, remaining) -> bool:
    """Run the trials; returns True when the user interrupted (results are still written)."""
    bar = tqdm(total=remaining, desc="trials", unit="trial", disable=not settings.progress)
    best: dict[str, Any] = {}

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if counted_trials(study) >= settings.trials:  # other workers may have filled the budget
            study.stop()
        row = results.trial_row(trial)
        for error in host.trial_finished(trial.number, row, settings.out_dir):
            tqdm.write(error)
        if row["feasible"] and (not best or row["latency_ms"] < best["latency_ms"]):
            best.update(row)
        prune_candidates(study, settings, settings.out_dir / "candidates")
        bar.update(1)
        postfix = f"#{trial.number} {row['ended']}"
        if best:
            postfix += f" | best feasible: {best['latency_ms']:.1f} ms, acc {best['accuracy']:.3f}"
        bar.set_postfix_str(postfix)

    # Each trial ends with a full garbage collection (a trial's model copies can sit in reference
    # cycles). With torch and transformers loaded that pass walks ~450k objects, about 0.25 s a
    # trial; freezing what exists now (modules, the task, the teacher: alive for the whole run)
    # leaves it only the objects the trials made. Unfrozen afterwards, so nothing is kept for good.
    gc.collect()
    gc.freeze()
    started = time.monotonic()
    try:
        study.optimize(
            objective, n_trials=remaining, timeout=settings.timeout_s, catch=(Exception,),
            callbacks=[after_trial], gc_after_trial=True,
        )
    except KeyboardInterrupt:
        tqdm.write("interrupted: writing the results so far (Ctrl-C again to quit at once)")
        return True
    finally:
        bar.close()
        study.set_user_attr("last_run_seconds", round(time.monotonic() - started, 1))
        gc.unfreeze()
    return False


def prune_candidates(study: optuna.Study, settings: SearchSettings, candidates_dir: Path) -> None:
    """Keep saved candidates only for the Pareto front and the recommended trial (bounded disk)."""
    if not candidates_dir.is_dir():
        return
    frame = results.trials_frame(study)
    keep = set(results.pareto_front(frame)["number"].astype(int))
    best = results.recommend(frame, settings.prefer)
    if best is not None:
        keep.add(int(best["number"]))
    for path in candidates_dir.glob("trial-*"):
        if int(path.name.split("-")[1]) not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _render_report(study, frame, document, settings, out_dir, host) -> None:
    """report.html/report.md; a rendering problem is reported and never costs the results."""
    from autocompress.report import RunData, write_report

    run = RunData(study, frame, document, dict(study.user_attrs.get("run", {})),
                  list(study.user_attrs.get("references", [])), settings.limits, settings.prefer)
    try:
        files = write_report(run, out_dir, host)
    except Exception as exc:
        tqdm.write(f"warning: the report could not be rendered ({type(exc).__name__}: {exc}); "
                   f"trials.csv and pareto.json are written; retry with 'autocompress report {out_dir}'")
        return
    for error in files.errors:
        tqdm.write(f"warning: {error}")


def write_outputs(study: optuna.Study, settings: SearchSettings, baseline: dict[str, Any], out_dir: Path,
                  host: Host | None = None) -> SearchOutcome:
    frame = results.trials_frame(study)
    document = results.pareto_document(frame, baseline, settings.limits, settings.prefer)
    results.write_tables(frame, document, out_dir)
    recommended = document["recommended"]
    _render_report(study, frame, document, settings, out_dir, host)
    best_dir = out_dir / "best"
    source = out_dir / "candidates" / f"trial-{recommended:05d}" if recommended is not None else None
    if source is not None and source.is_dir():
        staging = out_dir / ".best-staging"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        shutil.rmtree(best_dir, ignore_errors=True)
        staging.rename(best_dir)
    return SearchOutcome(out_dir, settings.study_name, len(frame), recommended, document)


def public_url(url: str) -> str:
    """A storage URL safe to write into reports: the password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."


def write_run_json(out_dir: Path, settings: SearchSettings, task, baseline: Baseline, study: optuna.Study) -> None:
    """run.json: how this run was made. The same record is kept in the study (``run`` user attr)
    so a report rendered from the database alone has it too."""
    record = {
        "study": settings.study_name,
        "storage": public_url(settings.storage_url) if settings.storage else "sqlite (study.db in this directory)",
        "task": settings.task,
        "task_description": task.description,
        "task_fingerprint": task.fingerprint,
        "task_info": asdict(task.info),
        "target": settings.target,
        "seed": settings.seed,
        "sampler": settings.sampler,
        "pruner": settings.pruner,
        "prefer": settings.prefer,
        "limits": asdict(settings.limits),
        "measure": asdict(settings.measure),
        "trials": settings.trials,
        "timeout_s": settings.timeout_s,
        "command": ["autocompress", *(public_url(a) if "://" in a else a for a in settings.command or sys.argv[1:])],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(settings.measure.threads),
        "baseline": baseline.as_dict(),
    }
    text = json.dumps(record, indent=2, default=str)
    (out_dir / "run.json").write_text(text)
    study.set_user_attr("run", json.loads(text))
