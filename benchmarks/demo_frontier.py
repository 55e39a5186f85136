"""What the search finds on the demo task, against what a person would do by hand.

In one run on this machine: the teacher (all-MiniLM-L6-v2 fine-tuned on movie-review polarity),
simple baselines (int8 dynamic alone; bf16 alone; half the layers + distillation at a fixed
recipe, DistilBERT-style; the same + int8) and ``autocompress search`` with the default trial
budget, once per ``--targets`` entry (cpu: PyTorch eager; onnxruntime; openvino). Every model is
then saved/exported and re-measured **in a fresh process** on the target it was found for
(latency at batch 1 and 16, sequence length 64, 2 threads; memory; test accuracy scored by that
target's runtime), with the search-time figure beside the fresh one: the fidelity check is
printed for every target. Speed-ups are against the PyTorch fp32 teacher measured fresh; each
search's best free option (the uncompressed teacher on its best runtime and precision, from the
search's free floor) is re-measured fresh too, and the found models' speed-up over it printed.
Prints Markdown tables, the target checks and whether the found front dominates each baseline;
writes frontier.json next to the models.

    python benchmarks/demo_frontier.py                                   # the published table (cpu)
    python benchmarks/demo_frontier.py --targets cpu,onnxruntime,openvino   # one search per runtime
    python benchmarks/demo_frontier.py --quick    # CI smoke run: smoke teacher, 2 trials, short recovery

Quick mode re-measures every model in one fresh process (the published run: one process each).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from frontier import (
    benchmark_parser,
    build_baselines,
    measure_each,
    measure_fresh,
    options_from_flags,
    percent_difference,
    quick_search_flags,
    run_search,
)

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
#: Names of the fresh measurements that are no model row: each search's free floor, the teacher at the end.
FLOOR, TEACHER_AGAIN = "free floor on ", "teacher again"


def task_flags(quick: bool) -> list[str]:
    """The demo task options shared by the baselines, the search and the fresh measurements. Quick:
    the smoke demo task the test suite shares (one cached teacher), and few timed runs (the smoke
    run checks that every number is there and sane, not how large it is)."""
    from autocompress.testing.smoke import smoke_demo_flags

    return [*smoke_demo_flags(), "--eval-limit", "400", "--repeats", "5", "--warmup", "1"] if quick else []


#: Quick mode trains every recovery step this long (a few optimiser steps): the smoke run checks
#: that each number is there and sane, and training is nearly all of a search's time.
QUICK_RECOVERY_EPOCHS = 0.1
#: Quick mode's search budget: its two starting points (a post step alone; a structure step, recovery
#: and a post step), with the short recovery.
QUICK_TRIALS = 2
QUICK_STARTING_POINTS = [
    {"quantization": {"dtype": "int8"}},
    {"ffn_pruning": {"keep_fraction": 0.7}, "distillation": {"epochs": QUICK_RECOVERY_EPOCHS},
     "quantization": {"dtype": "int8"}},
]


def _measure_here(requests: list[dict[str, Any]], flags: list[str]) -> None:
    """The ``--measure`` process: one request measured here, or several each in a forked child;
    prints the records as one JSON list."""
    from autocompress.demo_data import default_cache_dir, load_demo_task_data
    from autocompress.measure import long_lived_objects
    from autocompress.plugin_manager import build_host

    options = options_from_flags(flags)
    host = build_host()
    data = load_demo_task_data(seed=0, cache_dir=options.get("cache_dir") or default_cache_dir())
    # Each measurement's garbage collection skips what was loaded up to here (modules, host, data).
    with long_lived_objects():
        records = measure_each(requests, lambda request: _measure_one(request, options, host, data))
    print(json.dumps(records))


def _measure_one(request: dict[str, Any], options: dict[str, Any], host: Any, data: Any) -> dict[str, Any]:
    import torch

    from autocompress import load_pretrained
    from autocompress.arch import adapter_for
    from autocompress.candidate import apply_steps
    from autocompress.measure import MeasureSettings
    from autocompress.technique import ApplyContext, PlanStep
    from autocompress.training import accuracy, encode

    torch.manual_seed(0)
    model, tokenizer = load_pretrained(request["dir"], host)
    post = request.get("post")
    if post:  # a by-hand post step on the reloaded model (static int8 calibrates on the training split)
        context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=tokenizer, data=data,
                               max_length=64)
        steps = [PlanStep(host.techniques[name], host.techniques[name].make_config(config))
                 for name, config in post.items()]
        model = apply_steps(model, steps, context).eval()
    target = host.targets[request["target"]]()
    record: dict[str, Any] = {"target": request["target"]}
    repeats, warmup = options.get("repeats") or 30, options.get("warmup") if options.get("warmup") is not None else 5
    for batch in BATCHES:
        m = target.measure(model, MeasureSettings(batch_size=batch, seq_len=64, threads=2, repeats=repeats,
                                                  warmup=warmup))
        record[f"b{batch}"] = {"latency_ms": m.latency_ms, "latency_p90_ms": m.latency_p90_ms,
                               "memory_mb": m.memory_mb}
        record["parameters"] = m.parameters
    test = data.test.head(options["eval_limit"]) if options.get("eval_limit") else data.test
    record["accuracy"] = accuracy(target.runtime(model), encode(tokenizer, test, 64))
    return record


def main() -> None:
    parser = benchmark_parser(__doc__, "runs/demo-frontier", "search budget (default: the product's default)")
    parser.add_argument("--targets", default="cpu", help="comma-separated targets to search on (default: cpu)")
    args = parser.parse_args()
    if args.measure:
        _measure_here(json.loads(args.measure), json.loads(args.flags))
        return
    flags = task_flags(args.quick)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    trials = QUICK_TRIALS if args.quick and args.trials is None else args.trials
    # The free floor of the quick run: the searched targets only (each other runtime costs minutes).
    free_floor = ",".join(targets) if args.quick else None
    args.out.mkdir(parents=True, exist_ok=True)
    search_flags = (quick_search_flags(args.out, QUICK_STARTING_POINTS, QUICK_RECOVERY_EPOCHS) if args.quick
                    else [])
    started = time.perf_counter()
    models = build_baselines(args.out, flags, BASELINES, QUICK_RECOVERY_EPOCHS if args.quick else None)
    searches = [run_search(args.out, ["--max-accuracy-drop", "0.03", *flags, *search_flags], trials,
                           target, free_floor) for target in targets]
    for search in searches:
        models.update(search["found"])
    requests = {name: {"dir": info["dir"], "target": info.get("target", "cpu")} for name, info in models.items()}
    for search in searches:  # each search's best free option: the teacher with that post step, on that target
        best = search["best_free"]
        if best is not None:
            post = {best["technique"]: best["config"]} if best["technique"] else None
            requests[FLOOR + search["target"]] = {"dir": models["teacher"]["dir"], "target": best["target"],
                                                  "post": post}
    # The teacher once more at the end: the machine's drift over the run, stated with the table.
    requests[TEACHER_AGAIN] = {"dir": models["teacher"]["dir"], "target": "cpu"}
    fresh = measure_fresh(__file__, requests, flags, one_process=args.quick)
    floors = {search["target"]: {**search["best_free"], "fresh": fresh.pop(FLOOR + search["target"])}
              for search in searches if search["best_free"] is not None}
    teacher_again = fresh.pop(TEACHER_AGAIN)
    report = summarise(models, fresh, teacher_again, searches, floors, args, time.perf_counter() - started)
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
    return [f"search trial #{int(t['number'])} ({t['plan']}): test accuracy {t['test_accuracy']:.4f}, "
            f"{t['speedup']:.2f}x and {t['memory_mb']:.1f} MB at search time, validation accuracy "
            f"{t['val_accuracy']:.4f}"
            for _, t in complete.iterrows()
            if t["test_accuracy"] >= base["accuracy"] and t["speedup"] >= base["speedup_b1"]
            and t["memory_mb"] <= base["memory_mb"]]


def summarise(models, fresh, teacher_again, searches, floors, args, total_s) -> dict[str, Any]:
    teacher = fresh["teacher"]
    t1 = (teacher["b1"]["latency_ms"] + teacher_again["b1"]["latency_ms"]) / 2
    t16 = (teacher["b16"]["latency_ms"] + teacher_again["b16"]["latency_ms"]) / 2
    rows, lines = [], []
    header = ("| model | target | test acc | % of teacher | b1 median / p90 ms | b1 speed-up | b16 median ms "
              "| b16 speed-up | memory MB | smaller | params | wall time | search-time b1 ms / MB "
              "| fresh vs search (latency / memory) |")
    lines += [header, "|" + "---|" * 14]
    for name, info in models.items():
        f = fresh[name]
        search_row = info.get("search")
        row = {"name": name, "target": f["target"], "plan": info["plan"], "accuracy": f["accuracy"],
               "pct_teacher": 100 * f["accuracy"] / teacher["accuracy"], "b1": f["b1"]["latency_ms"],
               "b1_p90": f["b1"]["latency_p90_ms"], "speedup_b1": t1 / f["b1"]["latency_ms"],
               "b16": f["b16"]["latency_ms"], "speedup_b16": t16 / f["b16"]["latency_ms"],
               "memory_mb": f["b1"]["memory_mb"], "smaller": teacher["b1"]["memory_mb"] / f["b1"]["memory_mb"],
               "parameters": f["parameters"], "wall_s": info.get("wall_s"),
               "search_b1": search_row["latency_ms"] if search_row else None,
               "search_memory_mb": search_row["memory_mb"] if search_row else None}
        row["difference_pct"] = percent_difference(row["b1"], row["search_b1"])
        row["memory_difference_pct"] = percent_difference(row["memory_mb"], row["search_memory_mb"])
        rows.append(row)
        wall = (f"{row['wall_s']:.0f} s" if row["wall_s"] is not None
                else ("search" if search_row else "-"))
        lines.append(
            f"| {name} | {row['target']} | {row['accuracy']:.4f} | {row['pct_teacher']:.1f}% | {row['b1']:.2f} / "
            f"{row['b1_p90']:.2f} | {row['speedup_b1']:.2f}x | {row['b16']:.1f} | {row['speedup_b16']:.2f}x | "
            f"{row['memory_mb']:.1f} | {row['smaller']:.2f}x | {row['parameters'] / 1e6:.2f} M | {wall} | "
            + (f"{row['search_b1']:.2f} / {row['search_memory_mb']:.1f} | {row['difference_pct']:+.1f}% / "
               f"{row['memory_difference_pct']:+.1f}% |" if row["search_b1"] else "- | - |"))
    baselines = [r for r in rows if r["name"] in BASELINES]
    checks, targets, floor_lines = [], [], []
    for search in searches:
        found = [r for r in rows if r["name"] in search["found"]]
        target = search["target"]
        for base in baselines:
            better = [r["name"] for r in found if r["accuracy"] >= base["accuracy"] and r["b1"] <= base["b1"]
                      and r["memory_mb"] <= base["memory_mb"]]
            checks.append(f"- {target}: {base['name']}: " + (f"dominated by {', '.join(better)}" if better
                                                             else "**not dominated** by any found model"))
            if not better:
                checks += [f"  - not kept: {line}" for line in beaten_off_front(search, base)]
        fast = [r for r in found if r["pct_teacher"] >= 99]
        small = [r for r in found if r["pct_teacher"] >= 97]
        best_fast = max(fast, key=lambda r: r["speedup_b1"]) if fast else None
        best_small = max(small, key=lambda r: r["smaller"]) if small else None
        diffs = [abs(r["difference_pct"]) for r in found if r["difference_pct"] is not None]
        floor = floors.get(target)
        over_floor = None
        if floor is not None and best_fast is not None:
            floor_b1 = floor["fresh"]["b1"]["latency_ms"]
            over_floor = floor_b1 / best_fast["b1"]
            floor_lines.append(
                f"- {target}: best free option (search's floor) the teacher on {floor['target']}, {floor['variant']}: "
                f"fresh {floor_b1:.2f} ms ({t1 / floor_b1:.2f}x the PyTorch fp32 teacher), test acc "
                f"{floor['fresh']['accuracy']:.4f} (during the search: {floor['speedup']:.2f}x the teacher beside it)")
        targets += [
            f"- {target}: fastest found at >= 99% of teacher accuracy: "
            + (f"{best_fast['name']} {best_fast['speedup_b1']:.2f}x (target >= 5x)" if best_fast else "none"),
            f"- {target}: its speed-up over the best free option (fresh): "
            + (f"{over_floor:.2f}x (target >= 1.5x)" if over_floor is not None else "n/a (no floor or no model)"),
            f"- {target}: smallest found at >= 97%: "
            + (f"{best_small['name']} {best_small['smaller']:.2f}x (target >= 10x)" if best_small else "none"),
            f"- {target}: fresh-process vs search-time latency (batch 1): largest difference "
            + (f"{max(diffs):.1f}% (target <= 10%)" if diffs else "n/a"),
        ]
    targets.append("- teacher batch-1 latency at the start / end of the measurements: "
                   f"{teacher['b1']['latency_ms']:.2f} / {teacher_again['b1']['latency_ms']:.2f} ms "
                   "(speed-ups use their mean)")
    searches_text = [f"Search on {s['target']}: `{s['command']}`: {len(s['found'])} models on the front, "
                     f"{s['wall_s'] / 60:.1f} min wall time (teacher cached)." for s in searches]
    markdown = "\n".join([
        *lines, "",
        *searches_text, f"Whole benchmark: {total_s / 60:.1f} min.", "",
        "Does the found front dominate each baseline (at least as accurate, as fast and as small)? (The front is "
        "chosen on validation accuracy; 'not kept' lists search trials that beat a baseline on test accuracy, "
        "speed-up and memory all the same.)", *checks, "",
        "The free floor, re-measured in a fresh process:", *(floor_lines or ["- none measured"]), "",
        "Targets:", *targets,
    ])
    return {"rows": rows, "markdown": markdown, "searches": [{k: v for k, v in s.items() if k != "pareto"}
                                                              for s in searches],
            "floors": floors, "total_s": total_s, "teacher_end": teacher_again}


if __name__ == "__main__":
    main()
