"""``--isolate``: each trial runs in a child process, so a crash or a hard memory cap ends only that trial.

The parent keeps everything Optuna: its ``Objective`` samples the plan with the parent's trial (the
sampler's state is never duplicated) and records how the trial ended, exactly as for an in-process
trial; its storage records every result; its heartbeat keeps the trial alive. ``InChildProcess`` is
the objective's evaluator: the child (started with ``spawn``: a forked torch/OpenMP process is
unsafe) rebuilds the plugin host, the task and the shared environment with ``make_environment``,
runs the plan with the same ``evaluate_plan`` as an in-process trial, forwards what it records on
the way (measurement, recovery curve, work time) and pruning questions over a pipe, and sends back
its outcome or why it stopped. The parent raises ``TrialFailed`` when the child dies (signal or exit
code and the plan named), kills it past ``--trial-timeout`` (or when it hangs while loading: see
``load_limit``) and terminates it on Ctrl-C/SIGTERM.

``--trial-memory-mb`` becomes a hard cap in the child: its address space (``RLIMIT_AS``) may grow by
that much after loading, so an allocation over it fails at once (no polling) and the trial fails
with the memory reason.

Plugins registered in code (``build_host(extra_plugins=...)``) must be module-level objects of an
importable module: the child imports them by ``module:attribute``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import optuna

from autocompress.errors import InputError
from autocompress.measure import long_lived_objects
from autocompress.plugin_manager import BUILTIN, BUILTIN_PLUGINS, Host
from autocompress.search.environment import TrialEnvironment, make_environment, technique_spaces
from autocompress.search.objective import PrunedTrial, TrialFailed, evaluate_plan, failure_reason
from autocompress.search.sampling import plan_of_params
from autocompress.search.settings import SearchSettings
from autocompress.search.trial_limits import address_space_limit
from autocompress.study.record import Baseline, TrialOutcome, describe_plan, steps_of
from autocompress.task import load_task, unlabeled_texts
from autocompress.technique import Plan

IN_CODE = "registered in code"
KILL_GRACE_S = 5.0
# A child loads what the search process loaded before its first trial (plugins, model, data), so
# it gets a multiple of the time that took, never less than the floor. Past it, it is hung
# (a plugin stuck at import, a deadlock) and is killed: the search goes on.
LOAD_LIMIT_FLOOR_S = 120.0
LOAD_LIMIT_FACTOR = 10.0


def load_limit(search_load_s: float) -> float:
    """Seconds a trial's child may take to load, given the search process's own loading time."""
    return max(LOAD_LIMIT_FLOOR_S, LOAD_LIMIT_FACTOR * search_load_s)


@dataclass(frozen=True)
class HostRecipe:
    """How a child process rebuilds the parent's plugin host."""

    disabled: tuple[str, ...]
    autoload: bool
    #: (plugin name, "module:attribute") of plugins registered in code.
    extra: tuple[tuple[str, str], ...]

    def build(self) -> Host:
        import importlib

        from autocompress.plugin_manager import build_host

        extra = []
        for name, where in self.extra:
            module_name, _, attribute = where.partition(":")
            module = importlib.import_module(module_name)
            extra.append((name, getattr(module, attribute) if attribute else module))
        return build_host(disabled=self.disabled, autoload=self.autoload, extra_plugins=extra)


def _where(plugin: object) -> str | None:
    """``module`` or ``module:attribute`` naming ``plugin`` in an importable module, or None."""
    if isinstance(plugin, ModuleType):
        return plugin.__name__ if plugin.__name__ != "__main__" else None
    module_name = getattr(plugin, "__module__", None) or getattr(type(plugin), "__module__", None)
    module = sys.modules.get(module_name or "")
    if module is None or module_name == "__main__":
        return None
    for attribute, value in vars(module).items():
        if value is plugin:
            return f"{module_name}:{attribute}"
    return None


def host_recipe(host: Host) -> HostRecipe:
    """The recipe for ``host``; InputError naming the plugin when a child could not rebuild it."""
    loaded = {info.module for info in host.plugins if info.distribution == BUILTIN}
    disabled = tuple(m.rsplit(".", 1)[-1] for m in BUILTIN_PLUGINS if m not in loaded)
    autoload = any(info.distribution not in (BUILTIN, IN_CODE) for info in host.plugins)
    extra = []
    for info in host.plugins:
        if info.distribution != IN_CODE or info.error:
            continue
        where = _where(host.pm.get_plugin(info.name))
        if where is None:
            raise InputError(
                f"--isolate: plugin '{info.name}' was registered in code and is not a module-level object of an "
                "importable module, so a trial's child process cannot load it; define it at module level in an "
                "importable module (or install it as an entry point), or run without --isolate")
        extra.append((info.name, where))
    return HostRecipe(disabled, autoload, tuple(extra))


# ---------------------------------------------------------------- child side


class ChildTrial:
    """The trial ``evaluate_plan`` records on in a child process: every write goes to the parent's trial."""

    def __init__(self, number: int, params: dict[str, Any], user_attrs: dict[str, Any], conn: Any):
        self.number = number
        self.params = params
        self.user_attrs = dict(user_attrs)
        self.conn = conn

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value
        self.conn.send(("attr", key, value))

    def ask_prune(self, trial: Any, curve: dict[int, float]) -> bool:
        self.conn.send(("prune?", curve))
        return bool(self.conn.recv())


@dataclass(frozen=True)
class ChildJob:
    settings: SearchSettings
    recipe: HostRecipe
    fingerprint: str
    baseline: dict[str, Any]
    number: int
    params: dict[str, Any]
    user_attrs: dict[str, Any]
    measurements: dict[str, Any]
    #: The techniques the parent searches (those that support the model), in its order.
    techniques: tuple[str, ...]


def child_main(job: ChildJob, conn: Any) -> None:
    """Entry point of a trial's child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C does
    _die_with_parent()
    try:
        env = _child_environment(job)
        plan = plan_of_params(job.params, env.techniques, env.spaces)
    except BaseException as exc:
        conn.send(("setup", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=6)))
        return
    trial = ChildTrial(job.number, job.params, job.user_attrs, conn)
    env.prune_decision = trial.ask_prune
    known = set(env.measurements)
    conn.send(("ready",))
    try:
        with long_lived_objects(), address_space_limit(env.trial_memory_mb):
            result: tuple = ("outcome", evaluate_plan(env, trial, plan))
    except PrunedTrial as exc:
        result = ("pruned", str(exc), exc.constraints)
    except optuna.TrialPruned as exc:
        result = ("pruned", str(exc) or "pruned", {})
    except BaseException as exc:
        result = ("failed", failure_reason(exc))
    conn.send(("measurements", {k: v for k, v in env.measurements.items() if k not in known}))
    conn.send(result)


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when the search process dies (kill -9, a second Ctrl-C), so no
    orphan goes on working on a trial nobody will record."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _child_environment(job: ChildJob) -> TrialEnvironment:
    settings = job.settings
    host = job.recipe.build()
    task = load_task(host.tasks[settings.task](settings.task_options), unlabeled_texts(settings.task_options))
    if task.fingerprint != job.fingerprint:
        raise RuntimeError(f"the child process loaded a different task ({task.fingerprint} vs {job.fingerprint})")
    techniques, spaces = technique_spaces(host, settings)
    # The parent's list, not a fresh decision: the sampled plan's parameters name its techniques.
    techniques = [cls for cls in techniques if cls.name in job.techniques]
    env = make_environment(settings, host, task, techniques, spaces,
                           lambda target, validation, test: Baseline.from_dict(job.baseline))
    searched = tuple(cls.name for cls in env.techniques)
    if searched != job.techniques:
        raise RuntimeError(f"the child process would search other techniques ({', '.join(searched)}) than the "
                           f"search process ({', '.join(job.techniques)})")
    env.measurements.update(job.measurements)
    env.trial_timeout_s = None  # the parent enforces it (it can kill the child)
    return env


# ---------------------------------------------------------------- parent side


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the system's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        return f"child process killed by {name}{hint}"
    return f"child process exited with code {code} without a result"


class InChildProcess:
    """The objective's evaluator for ``--isolate``: each plan runs in a child process."""

    def __init__(self, env: TrialEnvironment, settings: SearchSettings, recipe: HostRecipe, load_limit_s: float):
        self.env = env
        self.settings = settings
        self.recipe = recipe
        self.load_limit_s = load_limit_s
        self.context = multiprocessing.get_context("spawn")

    def evaluate(self, trial: optuna.Trial, plan: Plan) -> TrialOutcome:
        job = ChildJob(
            settings=self.settings, recipe=self.recipe, fingerprint=self.env.task.fingerprint,
            baseline=self.env.baseline.as_dict(), number=trial.number, params=dict(trial.params),
            user_attrs=dict(trial.user_attrs), measurements=dict(self.env.measurements),
            techniques=tuple(cls.name for cls in self.env.techniques),
        )
        receiver, sender = self.context.Pipe(duplex=True)
        process = self.context.Process(target=child_main, args=(job, sender), name=f"autocompress-trial-{trial.number}",
                                       daemon=True)
        process.start()
        sender.close()
        loading, deadline = True, time.monotonic() + self.load_limit_s
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not receiver.poll(wait):
                    _stop(process)
                    if loading:
                        raise TrialFailed(f"ChildLoadTimeout: the trial's child process did not finish loading "
                                          f"the plugins, model and data within {self.load_limit_s:g} s "
                                          "(it was killed)")
                    seconds = self.env.trial_timeout_s
                    raise TrialFailed(f"TrialTimeout: trial exceeded the per-trial time limit of {seconds:g} s "
                                      "(its child process was killed)")
                try:
                    message = receiver.recv()
                except EOFError:
                    process.join(KILL_GRACE_S)
                    plan_text = describe_plan(steps_of(plan.to_manifest()))
                    raise TrialFailed(f"{describe_exit(process.exitcode)} while running {plan_text}") from None
                kind = message[0]
                if kind == "ready":
                    loading, deadline = False, None
                    if self.env.trial_timeout_s is not None:
                        deadline = time.monotonic() + self.env.trial_timeout_s
                elif kind == "attr":
                    trial.set_user_attr(message[1], message[2])
                elif kind == "prune?":
                    receiver.send(self.env.decide_prune(trial, message[1]))
                elif kind == "measurements":
                    self.env.measurements.update(message[1])
                elif kind == "outcome":
                    return message[1]
                elif kind == "pruned":
                    raise PrunedTrial(message[1], message[2])
                elif kind == "failed":
                    raise TrialFailed(message[1])
                elif kind == "setup":
                    raise TrialFailed(f"the trial's child process could not prepare the trial: {message[1]}")
        finally:
            _stop(process)
            receiver.close()


def _stop(process: multiprocessing.Process) -> None:
    """Terminate ``process`` if it still runs (SIGTERM, then SIGKILL after a grace period) and reap it."""
    if process.is_alive():
        process.join(0.5)  # it may be finishing on its own after sending its result
    if process.is_alive():
        process.terminate()
        process.join(KILL_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()
    if os.name == "posix" and process.exitcode is None:
        process.join()
