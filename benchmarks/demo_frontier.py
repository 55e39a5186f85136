"""What the search finds on the demo task, against what a person would do by hand.

In one run on this machine: the teacher (all-MiniLM-L6-v2 fine-tuned on movie-review polarity),
simple baselines (int8 dynamic alone; bf16 alone; half the layers + distillation at a fixed
recipe, DistilBERT-style; the same + int8) and ``autocompress search`` with the default trial
budget. Every model is then saved/exported and re-measured **in a fresh process** (latency at
batch 1 and 16, sequence length 64, 2 threads; memory; test accuracy), with the search-time
figure beside the fresh one. Prints a Markdown table, the target checks and whether the found
front dominates each baseline; writes frontier.json next to the models.

    python benchmarks/demo_frontier.py            # the published table (benchmarks/RESULTS.md)
    python benchmarks/demo_frontier.py --quick    # CI smoke run: smoke teacher, 3 trials, short recovery
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: A by-hand recipe: DistilBERT-style half depth, initialised from every other teacher layer, then
#: one epoch of distillation (soft labels + hidden states) with the defaults of our plugin.
HALF_DEPTH = [("layer_drop", {"keep_layers": 3, "strategy": "every_other"}),
              ("distillation", {"epochs": 1.0, "temperature": 2.0, "alpha": 0.5, "hidden_weight": 1.0})]
BASELINES = {
    "int8 dynamic alone": [("quantization", {"dtype": "int8"})],
    "bf16 alone": [("quantization", {"dtype": "bf16"})],
    "half depth + distillation": HALF_DEPTH,
    "half depth + distillation + int8": [*HALF_DEPTH, ("quantization", {"dtype": "int8"})],
}
BATCHES = (1, 16)


def task_flags(quick: bool) -> list[str]:
    """The demo task options shared by the baselines, the search and the fresh measurements. Quick:
    the smoke demo task the test suite shares (one cached teacher), and few timed runs (the smoke
    run checks that every number is there and sane, not how large it is)."""
    from autocompress.testing.smoke import smoke_demo_flags

    return [*smoke_demo_flags(), "--eval-limit", "400", "--repeats", "5", "--warmup", "1"] if quick else []


#: Quick mode trains every recovery step this long (a few optimiser steps): the smoke run checks
#: that each number is there and sane, and training is nearly all of a search's time.
QUICK_RECOVERY_EPOCHS = 0.1


def quick_search_flags(out: Path) -> list[str]:
    """Quick mode's search: the built-in starting points' plans with the short recovery, and a
    search space whose recovery epochs are that short too (written into ``out``)."""
    import yaml

    short = {"type": "float", "low": QUICK_RECOVERY_EPOCHS, "high": 2 * QUICK_RECOVERY_EPOCHS,
             "step": QUICK_RECOVERY_EPOCHS}
    space, starting = out / "quick-space.yaml", out / "quick-starting-points.yaml"
    space.write_text(yaml.safe_dump({"distillation": {"epochs": short}, "lora": {"epochs": short}}))
    starting.write_text(yaml.safe_dump([
        {"quantization": {"dtype": "int8"}},
        {"ffn_pruning": {"keep_fraction": 0.7}, "distillation": {"epochs": QUICK_RECOVERY_EPOCHS},
         "quantization": {"dtype": "int8"}},
        {"layer_drop": {"keep_layers": 4, "strategy": "every_other"},
         "distillation": {"epochs": QUICK_RECOVERY_EPOCHS}, "quantization": {"dtype": "int8"}},
    ]))
    return ["--search-space", str(space), "--starting-points", str(starting)]


def _options(flags: list[str]) -> dict[str, Any]:
    from autocompress.cli import build_parser
    from autocompress.config import OPTIONS, merge_options

    args = build_parser().parse_args(["search", *flags])
    return merge_options(None, {name: getattr(args, name) for name in OPTIONS})


def load_task(flags: list[str]):
    from autocompress.config import settings_from_options
    from autocompress.plugin_manager import build_host

    settings = settings_from_options(_options(flags))
    host = build_host()
    return host, settings, host.tasks["demo"](settings.task_options).load()


def build_baselines(out: Path, flags: list[str], quick: bool) -> dict[str, dict[str, Any]]:
    """Teacher and by-hand baselines, each saved like a search candidate; returns their records."""
    from autocompress.arch import adapter_for
    from autocompress.candidate import apply_steps
    from autocompress.model_io import save_candidate
    from autocompress.technique import ApplyContext, Plan, PlanStep, Stage

    host, settings, task = load_task(flags)
    saved, trained = {}, {}  # trained: float model per structure+recovery recipe (the + int8 variant reuses it)
    directory = save_candidate(out / "teacher", task.teacher, task.tokenizer, post_steps=[])
    saved["teacher"] = {"dir": str(directory), "wall_s": None, "plan": "the fine-tuned teacher"}
    for name, steps in BASELINES.items():
        plan_steps = []
        for technique, values in steps:
            cls = host.techniques[technique]
            if quick and "epochs" in values:
                values = {**values, "epochs": QUICK_RECOVERY_EPOCHS}
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


def run_search(out: Path, flags: list[str], trials: int | None) -> dict[str, Any]:
    """``autocompress search`` as a user runs it; every front member exported."""
    run = out / "search"
    command = ["autocompress", "search", "--out", str(run), "--no-progress", "--max-accuracy-drop", "0.03", *flags]
    if trials is not None:
        command += ["--trials", str(trials)]
    started = time.perf_counter()
    code = subprocess.run(command).returncode
    wall = time.perf_counter() - started
    if code not in (0, 5):
        raise SystemExit(f"the search failed with exit code {code}")
    pareto = json.loads((run / "pareto.json").read_text())
    found = {}
    for row in pareto["front"]:
        target = out / f"trial-{row['trial']}"
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["autocompress", "export", str(run), "--trial", str(row["trial"]), "--to", str(target)],
                       check=True, stdout=subprocess.DEVNULL)
        found[f"search #{row['trial']}"] = {"dir": str(target), "plan": row["plan"], "search": row}
    return {"wall_s": wall, "command": " ".join(command), "found": found, "pareto": pareto, "run_dir": str(run)}


def measure_fresh(directory: str, flags: list[str]) -> dict[str, Any]:
    """Reload ``directory`` in a new Python process; latency, memory, parameters, test accuracy."""
    result = subprocess.run([sys.executable, __file__, "--measure", directory, "--flags", json.dumps(flags)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure_here(directory: str, flags: list[str]) -> None:
    import torch

    from autocompress import load_pretrained
    from autocompress.demo_data import default_cache_dir, load_demo_task_data
    from autocompress.measure import MeasureSettings
    from autocompress.plugin_manager import build_host
    from autocompress.training import accuracy, encode

    torch.manual_seed(0)
    options = _options(flags)
    host = build_host()
    model, tokenizer = load_pretrained(directory, host)
    target = host.targets["cpu"]()
    record: dict[str, Any] = {}
    repeats, warmup = options.get("repeats") or 30, options.get("warmup") if options.get("warmup") is not None else 5
    for batch in BATCHES:
        m = target.measure(model, MeasureSettings(batch_size=batch, seq_len=64, threads=2, repeats=repeats,
                                                  warmup=warmup))
        record[f"b{batch}"] = {"latency_ms": m.latency_ms, "latency_p90_ms": m.latency_p90_ms,
                               "memory_mb": m.memory_mb}
        record["parameters"] = m.parameters
    data = load_demo_task_data(seed=0, cache_dir=options.get("cache_dir") or default_cache_dir())
    test = data.test.head(options["eval_limit"]) if options.get("eval_limit") else data.test
    record["accuracy"] = accuracy(model, encode(tokenizer, test, 64))
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, help="search budget (default: the product's default)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo-frontier"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--flags", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure_here(args.measure, json.loads(args.flags))
        return
    flags = task_flags(args.quick)
    trials = 3 if args.quick and args.trials is None else args.trials
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    models = build_baselines(args.out, flags, args.quick)
    search = run_search(args.out, [*flags, *(quick_search_flags(args.out) if args.quick else [])], trials)
    models.update(search["found"])
    fresh = {name: measure_fresh(info["dir"], flags) for name, info in models.items()}
    # The teacher once more at the end: the machine's drift over the run, stated with the table.
    teacher_again = measure_fresh(models["teacher"]["dir"], flags)
    report = summarise(models, fresh, teacher_again, search, args, time.perf_counter() - started)
    (args.out / "frontier.json").write_text(json.dumps(report, indent=2, default=str))
    print(report["markdown"])


def beaten_off_front(search: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """Search trials left off the front (which is chosen on validation accuracy) whose search-time
    figures beat ``base``'s fresh ones: test accuracy at least as high, speed-up and memory at
    least as good."""
    import pandas as pd

    trials = pd.read_csv(Path(search["run_dir"]) / "trials.csv")
    kept = {row["trial"] for row in search["pareto"]["front"]}
    complete = trials[(trials["ended"] == "complete") & ~trials["number"].isin(kept)]
    return [f"search trial #{int(t['number'])} ({t['plan']}): test accuracy {t['accuracy']:.4f}, "
            f"{t['speedup']:.2f}x and {t['memory_mb']:.1f} MB at search time, validation accuracy "
            f"{t['val_accuracy']:.4f}"
            for _, t in complete.iterrows()
            if t["accuracy"] >= base["accuracy"] and t["speedup"] >= base["speedup_b1"]
            and t["memory_mb"] <= base["memory_mb"]]


def summarise(models, fresh, teacher_again, search, args, total_s) -> dict[str, Any]:
    teacher = fresh["teacher"]
    t1 = (teacher["b1"]["latency_ms"] + teacher_again["b1"]["latency_ms"]) / 2
    t16 = (teacher["b16"]["latency_ms"] + teacher_again["b16"]["latency_ms"]) / 2
    rows, lines = [], []
    header = ("| model | test acc | % of teacher | b1 median / p90 ms | b1 speed-up | b16 median ms | b16 speed-up "
              "| memory MB | smaller | params | wall time | search-time b1 ms / MB "
              "| fresh vs search (latency / memory) |")
    lines += [header, "|" + "---|" * 13]
    for name, info in models.items():
        f = fresh[name]
        search_row = info.get("search")
        row = {"name": name, "plan": info["plan"], "accuracy": f["accuracy"],
               "pct_teacher": 100 * f["accuracy"] / teacher["accuracy"], "b1": f["b1"]["latency_ms"],
               "b1_p90": f["b1"]["latency_p90_ms"], "speedup_b1": t1 / f["b1"]["latency_ms"],
               "b16": f["b16"]["latency_ms"], "speedup_b16": t16 / f["b16"]["latency_ms"],
               "memory_mb": f["b1"]["memory_mb"], "smaller": teacher["b1"]["memory_mb"] / f["b1"]["memory_mb"],
               "parameters": f["parameters"], "wall_s": info.get("wall_s"),
               "search_b1": search_row["latency_ms"] if search_row else None,
               "search_memory_mb": search_row["memory_mb"] if search_row else None}
        row["difference_pct"] = (100 * (row["b1"] - row["search_b1"]) / row["search_b1"]
                                 if row["search_b1"] else None)
        row["memory_difference_pct"] = (100 * (row["memory_mb"] - row["search_memory_mb"]) / row["search_memory_mb"]
                                        if row["search_memory_mb"] else None)
        rows.append(row)
        wall = (f"{row['wall_s']:.0f} s" if row["wall_s"] is not None
                else ("search" if search_row else "-"))
        lines.append(
            f"| {name} | {row['accuracy']:.4f} | {row['pct_teacher']:.1f}% | {row['b1']:.2f} / {row['b1_p90']:.2f} | "
            f"{row['speedup_b1']:.2f}x | {row['b16']:.1f} | {row['speedup_b16']:.2f}x | {row['memory_mb']:.1f} | "
            f"{row['smaller']:.2f}x | {row['parameters'] / 1e6:.2f} M | {wall} | "
            + (f"{row['search_b1']:.2f} / {row['search_memory_mb']:.1f} | {row['difference_pct']:+.1f}% / "
               f"{row['memory_difference_pct']:+.1f}% |" if row["search_b1"] else "- | - |"))
    found = [r for r in rows if r["name"].startswith("search")]
    baselines = [r for r in rows if r["name"] in BASELINES]
    checks = []
    for base in baselines:
        better = [r["name"] for r in found if r["accuracy"] >= base["accuracy"] and r["b1"] <= base["b1"]
                  and r["memory_mb"] <= base["memory_mb"]]
        checks.append(f"- {base['name']}: " + (f"dominated by {', '.join(better)}" if better
                                                else "**not dominated** by any found model"))
        if not better:
            checks += [f"  - not kept: {line}" for line in beaten_off_front(search, base)]
    fast = [r for r in found if r["pct_teacher"] >= 99]
    small = [r for r in found if r["pct_teacher"] >= 97]
    best_fast = max(fast, key=lambda r: r["speedup_b1"]) if fast else None
    best_small = max(small, key=lambda r: r["smaller"]) if small else None
    diffs = [abs(r["difference_pct"]) for r in found if r["difference_pct"] is not None]
    targets = [
        "- fastest found at >= 99% of teacher accuracy: "
        + (f"{best_fast['name']} {best_fast['speedup_b1']:.2f}x (target >= 3x, stretch 5x)" if best_fast else "none"),
        "- smallest found at >= 97%: "
        + (f"{best_small['name']} {best_small['smaller']:.2f}x (target >= 8x, stretch 10x)" if best_small else "none"),
        "- fresh-process vs search-time latency (batch 1): largest difference "
        + (f"{max(diffs):.1f}% (target <= 10%)" if diffs else "n/a"),
        f"- teacher batch-1 latency at the start / end of the measurements: {teacher['b1']['latency_ms']:.2f} / "
        f"{teacher_again['b1']['latency_ms']:.2f} ms (speed-ups use their mean)",
    ]
    markdown = "\n".join([
        *lines, "",
        f"Search: `{search['command']}`: {len(search['found'])} models on the front, "
        f"{search['wall_s'] / 60:.1f} min wall time (teacher cached). Whole benchmark: {total_s / 60:.1f} min.", "",
        "Does the found front dominate each baseline (at least as accurate, as fast and as small)? (The front is "
        "chosen on validation accuracy; 'not kept' lists search trials that beat a baseline on test accuracy, "
        "speed-up and memory all the same.)", *checks, "",
        "Targets:", *targets,
    ])
    return {"rows": rows, "markdown": markdown, "search_wall_s": search["wall_s"], "total_s": total_s,
            "teacher_end": teacher_again}


if __name__ == "__main__":
    main()
