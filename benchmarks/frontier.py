"""What the frontier benchmarks share (demo_frontier.py, llm_frontier.py): the task a list of
``autocompress search`` flags selects, by-hand baselines built and saved the way the search saves a
candidate, ``autocompress search`` run and its front exported as a user would, and each saved model
reloaded and measured again in a fresh Python process by the calling script's ``--measure`` mode.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: A baseline recipe: [(technique, config values)], applied in stage order. A float ``keep_layers``
#: of ``layer_drop`` is a fraction of the teacher's depth ("half the layers" of whatever model it is).
Recipe = list[tuple[str, dict[str, Any]]]


def benchmark_parser(description: str, default_out: str, trials_help: str) -> argparse.ArgumentParser:
    """The arguments every frontier script takes: --quick, --trials, --out, and the hidden --measure
    and --flags of its fresh-process mode (``measure_fresh``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, help=trials_help)
    parser.add_argument("--out", type=Path, default=Path(default_out))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--flags", default="[]", help=argparse.SUPPRESS)
    return parser


def percent_difference(fresh: float, search: float | None) -> float | None:
    """How far (%) a fresh-process figure is from the one the search recorded; None without one."""
    return 100 * (fresh - search) / search if search else None


def options_from_flags(flags: list[str]) -> dict[str, Any]:
    """The run options ``autocompress search FLAGS`` would use."""
    from autocompress.cli import build_parser
    from autocompress.config import OPTIONS, merge_options

    args = build_parser().parse_args(["search", *flags])
    return merge_options(None, {name: getattr(args, name) for name in OPTIONS})


def load_flagged_task(flags: list[str]):
    """(host, settings, loaded task) of the task ``flags`` select, loaded as the search loads it."""
    from autocompress.config import settings_from_options
    from autocompress.plugin_manager import build_host
    from autocompress.task import load_task

    settings = settings_from_options(options_from_flags(flags))
    host = build_host()
    return host, settings, load_task(host.tasks[settings.task](settings.task_options))


def quick_search_flags(out: Path, starting_points: list[dict[str, Any]], epochs: float) -> list[str]:
    """A quick run's search: ``starting_points`` as its first plans, and a search space whose recovery
    epochs are ``epochs`` to twice that (both written into ``out``)."""
    import yaml

    short = {"type": "float", "low": epochs, "high": 2 * epochs, "step": epochs}
    space, starting = out / "quick-space.yaml", out / "quick-starting-points.yaml"
    space.write_text(yaml.safe_dump({"distillation": {"epochs": short}, "lora": {"epochs": short}}))
    starting.write_text(yaml.safe_dump(starting_points))
    return ["--search-space", str(space), "--starting-points", str(starting)]


def build_baselines(out: Path, flags: list[str], baselines: dict[str, Recipe], recovery_epochs: float | None = None,
                    task: tuple[Any, Any, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The teacher and each by-hand baseline, saved like a search candidate under ``out``; returns
    {name: {"dir", "wall_s", "plan"}}. ``recovery_epochs`` (quick runs) replaces every recipe's
    training epochs; ``task`` is ``load_flagged_task(flags)`` when the caller has it already. Recipes
    that differ only in their post steps train once."""
    from autocompress.arch import adapter_for
    from autocompress.candidate import apply_steps
    from autocompress.model_io import save_candidate
    from autocompress.technique import ApplyContext, Plan, PlanStep, Stage

    host, settings, task = task or load_flagged_task(flags)
    depth = adapter_for(task.teacher, host.architectures).num_layers()
    saved, trained = {}, {}  # trained: float model per structure+recovery recipe (the + int8 variant reuses it)
    directory = save_candidate(out / "teacher", task.teacher, task.tokenizer, post_steps=[])
    saved["teacher"] = {"dir": str(directory), "wall_s": None, "plan": "the teacher"}
    for name, steps in baselines.items():
        plan_steps = []
        for technique, values in steps:
            cls = host.techniques[technique]
            if recovery_epochs is not None and "epochs" in values:
                values = {**values, "epochs": recovery_epochs}
            if technique == "layer_drop" and isinstance(values.get("keep_layers"), float):
                values = {**values, "keep_layers": max(1, round(depth * values["keep_layers"]))}
            plan_steps.append(PlanStep(cls, cls.make_config(values)))
        plan = Plan.build(plan_steps)
        recipe = json.dumps([s for s in plan.to_manifest() if s["technique"] != "quantization"])
        started = time.perf_counter()
        model = copy.deepcopy(task.teacher)
        context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=task.tokenizer,
                               data=task.data, teacher=task.teacher, max_length=settings.task_options.max_length,
                               seed=settings.seed)
        if recipe in trained:
            model, context.tokenizer, wall = trained[recipe]
        else:
            model = apply_steps(model, plan.at(Stage.STRUCTURE), context)
            context.adapter = adapter_for(model, host.architectures)
            model = apply_steps(model, plan.at(Stage.RECOVER), context)
            wall = time.perf_counter() - started
            trained[recipe] = (model, context.tokenizer, wall)
        slug = name.replace(" ", "-").replace("+", "plus")
        directory = save_candidate(out / slug, model, context.tokenizer, post_steps=plan.to_manifest(Stage.POST),
                                   info={"plan": plan.to_manifest()})
        saved[name] = {"dir": str(directory), "wall_s": wall, "plan": plan.describe()}
        print(f"built {name} in {wall:.0f} s", flush=True)
    return saved


def run_search(out: Path, flags: list[str], trials: int | None, target: str, free_floor: str | None = None
               ) -> dict[str, Any]:
    """``autocompress search --target TARGET FLAGS`` as a user runs it (in ``out/search``, or
    ``out/search-TARGET``); every front member exported next to it."""
    run = out / ("search" if target == "cpu" else f"search-{target}")
    command = ["autocompress", "search", "--out", str(run), "--no-progress", "--target", target, *flags]
    if trials is not None:
        command += ["--trials", str(trials)]
    if free_floor is not None:
        command += ["--free-floor", free_floor]
    started = time.perf_counter()
    code = subprocess.run(command).returncode
    wall = time.perf_counter() - started
    if code not in (0, 5):
        raise SystemExit(f"the search on {target} failed with exit code {code}")
    pareto = json.loads((run / "pareto.json").read_text())
    found = {}
    prefix = "search" if target == "cpu" else f"search[{target}]"
    for row in pareto["front"]:
        exported = out / f"{prefix.replace('[', '-').replace(']', '')}-trial-{row['trial']}"
        shutil.rmtree(exported, ignore_errors=True)
        subprocess.run(["autocompress", "export", str(run), "--trial", str(row["trial"]), "--to", str(exported)],
                       check=True, stdout=subprocess.DEVNULL)
        found[f"{prefix} #{row['trial']}"] = {"dir": str(exported), "plan": row["plan"], "search": row,
                                             "target": target}
    return {"wall_s": wall, "command": shlex.join(command), "found": found, "pareto": pareto, "target": target,
            "best_free": best_free_option(run, pareto), "run_dir": str(run)}


def best_free_option(run: Path, pareto: dict[str, Any]) -> dict[str, Any] | None:
    """The search's best free option (search/floor.py) within its accuracy limit, or None."""
    import optuna

    from autocompress.study.floor import best_free, stored_rows

    study = optuna.load_study(study_name=json.loads((run / "run.json").read_text())["study"],
                              storage=f"sqlite:///{(run / 'study.db').resolve()}")
    best = best_free(stored_rows(study), pareto["baseline"]["val_accuracy"], pareto["limits"].get("max_accuracy_drop"))
    return None if best is None else dict(best)


def measure_fresh(script: str, requests: dict[str, dict[str, Any]], flags: list[str], one_process: bool = False
                  ) -> dict[str, dict[str, Any]]:
    """Each request measured by ``python SCRIPT --measure [REQUESTS] --flags FLAGS`` in a new Python
    process, which prints its records as one JSON list on its last line. The published run starts a
    process per request; ``one_process`` (quick runs) starts one for all, which ``in_forked_child``
    then runs each in."""
    batches = [list(requests)] if one_process else [[name] for name in requests]
    fresh = {}
    for names in batches:
        command = [sys.executable, script, "--measure", json.dumps([requests[name] for name in names]),
                   "--flags", json.dumps(flags)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"measuring {', '.join(names)} in a fresh process failed:\n{result.stderr[-3000:]}")
        fresh.update(zip(names, json.loads(result.stdout.strip().splitlines()[-1]), strict=True))
    return fresh


def import_model_code(directories: list[str]) -> None:
    """Import the saved models' transformers modules (seconds each) once, before forking; nothing
    runs on torch here, so no thread pool exists yet that a fork would break."""
    import importlib

    from transformers import AutoConfig, AutoTokenizer  # noqa: F401  (imported for the children)

    for model_type in {AutoConfig.from_pretrained(directory).model_type for directory in directories}:
        try:
            importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
        except ImportError:  # another layout: each child imports what it needs
            pass


def measure_each(requests: list[dict[str, Any]], measure_one: Any) -> list[Any]:
    """``measure_one(request)`` for each request of a ``--measure`` process: here when there is one,
    else each in a forked child (``in_forked_child``), after the saved models' code is imported."""
    if len(requests) == 1:
        return [measure_one(requests[0])]
    import_model_code([request["dir"] for request in requests])
    return [in_forked_child(lambda request=request: measure_one(request)) for request in requests]


def in_forked_child(work: Any) -> Any:
    """``work()`` run in a forked child of this process (forked before torch ran anything, so the
    child's memory and threads start as a fresh process's would); its JSON result."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, hand the record over, leave without running the parent's cleanup
        os.close(read)
        code = 0
        try:
            with os.fdopen(write, "w") as out:
                out.write(json.dumps(work()))
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as result:
        text = result.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"measuring in a forked child failed (exit status {os.waitstatus_to_exitcode(status)})")
    return json.loads(text)
