"""What the search finds on the embedding demo, against what a person does by hand and against ONNX Runtime.

In one run on this machine: the teacher (all-MiniLM-L6-v2, ``--task demo-embedding``: semantic
search over the demo's movie-review sentences), by-hand baselines (int8 dynamic alone; bf16 alone;
half the layers, every other one, + one epoch of distillation toward the teacher's embeddings; the
same + int8) and ``autocompress search --task demo-embedding --max-accuracy-drop 0.05`` (recall@10
of the teacher's neighbours at least 0.95, issue 18's bar) with the task's default budget. Every
model is saved (the search's front exported as a user would) and re-measured **in a fresh
process**, as the search measures (the cpu target: batch 1, sequence 64, 2 threads, median of 30
timed passes after 5 warm-up ones; memory = weights + working memory), and scored on the held-out
test sentences: recall@10 of the teacher's 10 nearest neighbours and the mean cosine between each
sentence's two embeddings. The teacher under ONNX Runtime int8 (dynamic, what sentence-transformers
users get for free) is measured the same way through the onnxruntime target. The targets are
checked and printed as met or MISSED; frontier.json is written next to the models.

    python benchmarks/embedding_frontier.py            # the published table (about an hour on 2 cores)
    python benchmarks/embedding_frontier.py --quick    # CI smoke run: tiny sentence model, 2 trials

Quick mode measures every model in one fresh process (a forked child each); the published run
starts one process per model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from frontier import (
    benchmark_parser,
    build_baselines,
    load_flagged_task,
    measure_each,
    measure_fresh,
    percent_difference,
    quick_search_flags,
    run_search,
)

#: By hand: half the encoder layers (every other one), then one epoch of distillation toward the
#: teacher's embeddings on the training sentences, as the search's distillation technique does it.
HALF_LAYERS = [("layer_drop", {"keep_layers": 0.5, "strategy": "every_other"}), ("distillation", {"epochs": 1.0})]
BASELINES = {
    "int8 dynamic alone": [("quantization", {"dtype": "int8"})],
    "bf16 alone": [("quantization", {"dtype": "bf16"})],
    "half the layers + distillation": HALF_LAYERS,
    "half the layers + distillation + int8": [*HALF_LAYERS, ("quantization", {"dtype": "int8"})],
}
ORT_INT8 = "teacher under ONNX Runtime int8"
#: Issue 18's bar: this much faster than the teacher at recall@10 >= MIN_RECALL of its neighbours.
TARGET_SPEEDUP, MIN_RECALL = 4.0, 0.95
#: The search's limit: recall@10 at most this far below the teacher's 1.0.
MAX_RECALL_DROP = 1 - MIN_RECALL
#: The fresh-process measurement (the search's defaults are 20 repeats; more here, one model at a time).
REPEATS, WARMUP, QUICK_REPEATS = 30, 5, 5
#: Quick mode: recovery this long, two trials (a post step alone; half the layers + distillation + int8).
QUICK_RECOVERY_EPOCHS, QUICK_TRIALS = 0.5, 2
QUICK_STARTING_POINTS = [
    {"quantization": {"dtype": "int8"}},
    {"layer_drop": {"keep_layers": 2, "strategy": "every_other"}, "distillation": {"epochs": QUICK_RECOVERY_EPOCHS},
     "quantization": {"dtype": "int8"}},
]


def task_flags(quick: bool, workdir: Path) -> list[str]:
    """The ``autocompress search`` task flags of the baselines and the search: the embedding demo, or
    (quick) a tiny sentence-transformers folder written from a config with synthetic sentences."""
    if not quick:
        return ["--task", "demo-embedding", "--max-accuracy-drop", f"{MAX_RECALL_DROP:g}"]
    from autocompress.testing import synthetic_sentiment, write_tiny_sentence_model

    model = write_tiny_sentence_model(workdir / "tiny-sentence-model")
    texts, _ = synthetic_sentiment(240, seed=5)
    (workdir / "sentences.txt").write_text("\n".join(texts) + "\n")
    return ["--task", "embedding", "--model", str(model), "--data", str(workdir / "sentences.txt"),
            "--max-accuracy-drop", "0.5", "--repeats", "5", "--warmup", "1"]


def _measure_here(requests: list[dict[str, Any]], flags: list[str]) -> None:
    """The ``--measure`` process: one request measured here, or several each in a forked child (each
    loads the task itself: torch must not have run before a fork); prints the records as one JSON list."""
    print(json.dumps(measure_each(requests, lambda request: _measure_one(request, flags))))


def _measure_one(request: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    """A saved model (``request["dir"]``) reloaded, measured on the cpu target and scored on the test
    sentences (the task loaded as the search loads it: the teacher's embeddings of them come from its
    cache); with ``request["onnxruntime_int8"]``, int8 dynamic of it on the onnxruntime target."""
    import torch

    from autocompress.measure import long_lived_objects

    torch.manual_seed(0)
    host, settings, task = load_flagged_task(flags)
    with long_lived_objects():
        return _measured(request, host, settings, task)


def _measured(request: dict[str, Any], host: Any, settings: Any, task: Any) -> dict[str, Any]:
    from dataclasses import replace

    from autocompress import load_pretrained
    from autocompress.embedding import Cosine, RecallAt10
    from autocompress.plugins.quantization import quantize_int8_dynamic
    from autocompress.training import encode

    model, tokenizer = load_pretrained(request["dir"], host)
    model.eval()
    target_name = "cpu"
    if request.get("onnxruntime_int8"):
        target_name = "onnxruntime"
        reason = host.targets[target_name].unavailable_reason()
        if reason is not None:
            return {"missing": reason}
        model = quantize_int8_dynamic(model)
    target = host.targets[target_name]()
    measure = replace(settings.measure, repeats=request["repeats"], warmup=request["warmup"])
    measurement = target.measure(model, measure)
    test = encode(tokenizer, task.data.test, settings.task_options.max_length)
    scored = target.runtime(model)
    return {"pid": os.getpid(), "target": target_name, "latency_ms": measurement.latency_ms,
            "memory_mb": measurement.memory_mb, "model_mb": measurement.model_mb,
            "parameters": measurement.parameters, "recall_at_10": RecallAt10().score(scored, test),
            "cosine": Cosine().score(scored, test), "test_sentences": len(task.data.test)}


def main() -> None:
    parser = benchmark_parser(__doc__, "runs/embedding-frontier",
                              "search budget (default: the task's, 8 for demo-embedding)")
    args = parser.parse_args()
    if args.measure:
        _measure_here(json.loads(args.measure), json.loads(args.flags))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    flags = task_flags(args.quick, args.out)
    models = build_baselines(args.out, flags, BASELINES, QUICK_RECOVERY_EPOCHS if args.quick else None)
    search_flags = quick_search_flags(args.out, QUICK_STARTING_POINTS, QUICK_RECOVERY_EPOCHS) if args.quick else []
    trials = QUICK_TRIALS if args.quick and args.trials is None else args.trials
    search = run_search(args.out, [*flags, *search_flags], trials, "cpu")
    models.update(search["found"])
    common = {"repeats": QUICK_REPEATS if args.quick else REPEATS, "warmup": 1 if args.quick else WARMUP}
    requests = {name: {"dir": info["dir"], **common} for name, info in models.items()}
    requests[ORT_INT8] = {"dir": models["teacher"]["dir"], "onnxruntime_int8": True, **common}
    fresh = measure_fresh(__file__, requests, flags, one_process=args.quick)
    report = summarise(models, fresh, search, args, time.perf_counter() - started)
    (args.out / "frontier.json").write_text(json.dumps(report, indent=2, default=str))
    print(report["markdown"])


def summarise(models: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]], search: dict[str, Any],
              args: argparse.Namespace, total_s: float) -> dict[str, Any]:
    """The table, the fidelity figures and the target checks (data in ``rows``, text in ``markdown``)."""
    teacher = fresh["teacher"]
    lines = ["| model | runtime | latency b1 ms | speed-up | memory MB | smaller | recall@10 | cosine | "
             "search-time ms | fresh vs search |", "|" + "---|" * 10]
    rows = []
    for name in [*models, ORT_INT8]:
        f = fresh[name]
        if "missing" in f:
            rows.append({"name": name, "missing": f["missing"]})
            lines.append(f"| {name} | {f['missing']} |" + " |" * 8)
            continue
        search_row = models.get(name, {}).get("search")
        row = {"name": name, "plan": models[name]["plan"] if name in models else "int8 dynamic of the teacher",
               **f, "speedup": teacher["latency_ms"] / f["latency_ms"],
               "smaller": teacher["memory_mb"] / f["memory_mb"],
               "search_latency_ms": search_row["latency_ms"] if search_row else None}
        row["difference_pct"] = percent_difference(f["latency_ms"], row["search_latency_ms"])
        rows.append(row)
        lines.append(
            f"| {name} | {f['target']} | {f['latency_ms']:.2f} | {row['speedup']:.2f}x | {f['memory_mb']:.1f} | "
            f"{row['smaller']:.2f}x | {f['recall_at_10']:.4f} | {f['cosine']:.4f} | "
            + (f"{row['search_latency_ms']:.2f} | {row['difference_pct']:+.1f}% |" if search_row else "- | - |"))
    found = [r for r in rows if r["name"] in search["found"] and "missing" not in r]
    diffs = [abs(r["difference_pct"]) for r in found if r["difference_pct"] is not None]
    markdown = "\n".join([
        *lines, "",
        f"Search: `{search['command']}`: {len(search['found'])} models on the front, {search['wall_s'] / 60:.1f} min "
        f"wall time. Whole benchmark: {total_s / 60:.1f} min. {teacher['test_sentences']} held-out test sentences; "
        "every row re-measured in a fresh process; speed-ups and memory against the PyTorch fp32 teacher. ONNX "
        "Runtime's memory is its graph file and what it allocates after warm-up (its arena holds what it took "
        "before: README, 'Targets').", "",
        f"Targets (recall@10 >= {MIN_RECALL:g} of the teacher's neighbours on the test sentences):",
        *target_checks(found, [r for r in rows if r["name"] == ORT_INT8 and "missing" not in r]),
        "- fresh-process vs search-time latency: largest difference "
        + (f"{max(diffs):.1f}%" if diffs else "n/a (no model found)"),
    ])
    return {"rows": rows, "markdown": markdown, "search": {k: v for k, v in search.items() if k != "pareto"},
            "total_s": total_s, "quick": args.quick, "pid": os.getpid()}


def target_checks(found: list[dict[str, Any]], onnx: list[dict[str, Any]]) -> list[str]:
    """Issue 18's bar over the found models: met or MISSED with the numbers, and against ONNX Runtime int8."""
    good = [r for r in found if r["recall_at_10"] >= MIN_RECALL]
    best = max(good, key=lambda r: r["speedup"]) if good else None
    if best is not None and best["speedup"] >= TARGET_SPEEDUP:
        line = f"- >= {TARGET_SPEEDUP:g}x faster: met by {best['name']}: {best['speedup']:.2f}x"
    elif best is not None:
        line = (f"- >= {TARGET_SPEEDUP:g}x faster: MISSED: the fastest at that recall, {best['name']}, is "
                f"{best['speedup']:.2f}x")
    else:
        nearest = max(found, key=lambda r: r["recall_at_10"]) if found else None
        line = (f"- >= {TARGET_SPEEDUP:g}x faster: MISSED: no found model keeps that recall"
                + (f"; the closest, {nearest['name']}, keeps {nearest['recall_at_10']:.4f} at "
                   f"{nearest['speedup']:.2f}x" if nearest else ""))
    lines = [line + (f" (recall@10 {best['recall_at_10']:.4f})" if best is not None else "")]
    if onnx:
        ort = onnx[0]
        beats = [r for r in found if r["speedup"] >= ort["speedup"] and r["recall_at_10"] >= ort["recall_at_10"]]
        lines.append(f"- against ONNX Runtime int8 of the teacher ({ort['speedup']:.2f}x at recall@10 "
                     f"{ort['recall_at_10']:.4f}): " + (", ".join(r["name"] for r in beats) + " as fast and as close"
                                                         if beats else "no found model is both as fast and as close"))
    return lines


if __name__ == "__main__":
    main()
