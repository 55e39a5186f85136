"""The runtimes users deploy on, side by side: the demo teacher and a compressed plan under PyTorch
eager, ONNX Runtime and OpenVINO, at each precision they offer, in one run on this machine.

Models: the teacher (all-MiniLM-L6-v2 fine-tuned on the demo task) and the demo's best by-hand
plan (half the layers, every other one kept; vocabulary trimmed to the training texts; one epoch of
distillation). Variants, each the technique a search would use, measured by the target a search
would use:

- PyTorch eager (target ``cpu``): fp32, bf16, dynamic int8;
- ONNX Runtime (``onnxruntime``): fp32, dynamic int8, static int8 (QDQ, calibrated on training texts);
- OpenVINO (``openvino``): f32, bf16 inference precision, int8 (NNCF, calibrated on training texts).

Latency at batch 1 and 16 (sequence 64, 2 threads): every variant is converted first, then all
take turns round after round (A B C ... A B C ...), so a shared machine's drift hits them alike;
the median over rounds is reported, with the speed-up over the PyTorch fp32 teacher. Memory: the
target's own figure at batch 1 (weights as the runtime holds them + working memory). Test
accuracy: scored by the runtime that was timed. The CPU's instruction-set features are printed
first: they decide which rows win.

    python benchmarks/runtimes.py            # the published table (about 15-25 min on 2 cores)
    python benchmarks/runtimes.py --quick    # CI smoke run: small slice, one round of few repeats

Quick mode: the smoke teacher; the compact plan's distillation sees the first ``QUICK_TRAIN``
training sentences (as many optimiser steps as before, fewer teacher logits to compute); one
timing round; 200 test sentences.

``--out DIR`` also writes the rows to ``DIR/runtimes.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

#: (runtime label, target name, precision label, quantization Config values or None)
VARIANTS = [
    ("PyTorch eager", "cpu", "fp32", None),
    ("PyTorch eager", "cpu", "bf16", {"dtype": "bf16"}),
    ("PyTorch eager", "cpu", "int8 dynamic", {"dtype": "int8"}),
    ("ONNX Runtime", "onnxruntime", "fp32", None),
    ("ONNX Runtime", "onnxruntime", "int8 dynamic", {"dtype": "int8"}),
    ("ONNX Runtime", "onnxruntime", "int8 static", {"dtype": "int8-static"}),
    ("OpenVINO", "openvino", "f32", None),
    ("OpenVINO", "openvino", "bf16", {"dtype": "bf16"}),
    ("OpenVINO", "openvino", "int8 static (NNCF)", {"dtype": "int8-static"}),
]
#: The demo's best by-hand plan (benchmarks/demo_frontier.py's half depth, plus vocabulary trimming).
COMPACT_PLAN = [("layer_drop", {"keep_layers": 3, "strategy": "every_other"}), ("vocab_trim", {"min_count": 2}),
                ("distillation", {"epochs": 1.0, "temperature": 2.0, "alpha": 0.5, "hidden_weight": 1.0})]
BATCHES = (1, 16)
#: Quick mode: the compact plan's recovery trains on this many training sentences, this many epochs.
QUICK_TRAIN, QUICK_EPOCHS = 400, 0.6


def build_models(quick: bool) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
    """The host, the demo task and {model name: (float model, its tokenizer)}."""
    from autocompress.arch import adapter_for
    from autocompress.candidate import apply_steps
    from autocompress.plugin_manager import build_host
    from autocompress.task import TaskOptions
    from autocompress.technique import ApplyContext, Plan, PlanStep, Stage
    from autocompress.testing.smoke import SMOKE_DEMO_OPTIONS

    options = TaskOptions(**SMOKE_DEMO_OPTIONS) if quick else TaskOptions()
    host = build_host()
    task = host.tasks["demo"](options).load()
    steps = []
    for name, values in COMPACT_PLAN:
        cls = host.techniques[name]
        if quick and "epochs" in values:
            values = {**values, "epochs": QUICK_EPOCHS}
        steps.append(PlanStep(cls, cls.make_config(values)))
    plan = Plan.build(steps)
    started = time.perf_counter()
    model = copy.deepcopy(task.teacher)
    context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=task.tokenizer, data=task.data,
                           teacher=task.teacher, max_length=64)
    model = apply_steps(model, plan.at(Stage.STRUCTURE), context)  # vocabulary trimming counts every text
    context.adapter = adapter_for(model, host.architectures)
    if quick:
        context.data = dataclasses.replace(task.data, train=task.data.train.head(QUICK_TRAIN))
    model = apply_steps(model, plan.at(Stage.RECOVER), context)
    print(f"built the compact plan ({plan.describe()}) in {time.perf_counter() - started:.0f} s", flush=True)
    return host, task, {"teacher": (task.teacher.eval(), task.tokenizer),
                        "3 layers + vocab trim + distillation": (model.eval(), context.tokenizer)}


def deploy_variants(host: Any, task: Any, models: dict[str, tuple[Any, Any]]) -> list[dict[str, Any]]:
    """Every (model, variant) deployed and converted once (conversion and calibration are not timed)."""
    from autocompress.arch import adapter_for
    from autocompress.candidate import apply_steps
    from autocompress.measure import MeasureSettings
    from autocompress.technique import ApplyContext, PlanStep

    quantization = host.techniques["quantization"]
    targets: dict[str, Any] = {}
    entries = []
    for model_name, (model, tokenizer) in models.items():
        for runtime, target_name, precision, values in VARIANTS:
            entry: dict[str, Any] = {"model": model_name, "runtime": runtime, "target": target_name,
                                     "precision": precision, "tokenizer": tokenizer}
            reason = host.targets[target_name].unavailable_reason()
            if reason is not None:
                entries.append({**entry, "refused": f"unavailable: {reason}"})
                continue
            target = targets.setdefault(target_name, host.targets[target_name]())
            deployed = copy.deepcopy(model)
            if values is not None:
                context = ApplyContext(adapter=adapter_for(deployed, host.architectures), tokenizer=tokenizer,
                                       data=task.data, max_length=64)
                step = PlanStep(quantization, quantization.make_config(values))
                deployed = apply_steps(deployed, [step], context).eval()
            try:
                target.measure(deployed, MeasureSettings(batch_size=1, seq_len=64, threads=2, warmup=1, repeats=1))
            except Exception as exc:  # a refusal (e.g. no bf16 on this CPU) is a row, not the end of the run
                entries.append({**entry, "refused": f"{type(exc).__name__}: {exc}"})
                continue
            entries.append({**entry, "deployed": deployed, "target_object": target})
            print(f"converted {model_name} / {runtime} {precision}", flush=True)
    return entries


def time_interleaved(entries: list[dict[str, Any]], batch: int, rounds: int, repeats: int) -> None:
    """Median latency per entry at ``batch``: all entries take turns, ``rounds`` times."""
    from autocompress.measure import MeasureSettings

    settings = MeasureSettings(batch_size=batch, seq_len=64, threads=2, warmup=2, repeats=repeats)
    live = [e for e in entries if "deployed" in e]
    timings: dict[int, list[float]] = {id(e): [] for e in live}
    for _ in range(rounds):
        for entry in live:
            measurement = entry["target_object"].measure(entry["deployed"], settings)
            timings[id(entry)].append(measurement.latency_ms)
            if batch == 1:
                entry["memory_mb"] = measurement.memory_mb
    for entry in live:
        entry[f"b{batch}_ms"] = statistics.median(timings[id(entry)])


def score(entries: list[dict[str, Any]], task: Any, quick: bool) -> None:
    from autocompress.training import accuracy, encode

    test = task.data.test.head(200) if quick else task.data.test
    encoded: dict[int, Any] = {}
    for entry in entries:
        if "deployed" in entry:
            tokenizer = entry["tokenizer"]
            data = encoded.setdefault(id(tokenizer), encode(tokenizer, test, 64))
            entry["accuracy"] = accuracy(entry["target_object"].runtime(entry["deployed"]), data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rounds, repeats = (1, 3) if args.quick else (5, 10)

    from autocompress.cpu import cpu_features

    features = cpu_features()
    print(f"CPU: {features.summary()} (int8: {features.int8_acceleration}, bf16: {features.bf16_acceleration})",
          flush=True)
    host, task, models = build_models(args.quick)
    from autocompress.measure import long_lived_objects

    # Every measurement's garbage collection skips what lives to the end (the task, the two models).
    with long_lived_objects():
        entries = deploy_variants(host, task, models)
        for batch in BATCHES:
            # batch 16 costs 10-16x batch 1 per run: fewer runs per round keep the rounds comparable in time
            time_interleaved(entries, batch, rounds, repeats if batch == 1 else max(1, repeats // 3))
        score(entries, task, args.quick)

    base = next(e for e in entries if e["model"] == "teacher" and e["precision"] == "fp32" and e["target"] == "cpu")
    print(f"\ndemo task, {200 if args.quick else len(task.data.test)} test sentences; latency: median of {rounds} "
          f"interleaved rounds ({repeats} runs at batch 1, {max(1, repeats // 3)} at batch 16 each), sequence 64, "
          "2 threads; speed-ups over the PyTorch fp32 teacher")
    print("| model | runtime | precision | b1 ms | b1 speed-up | b16 ms | b16 speed-up | memory MB | test acc |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for entry in entries:
        row = {k: v for k, v in entry.items() if k not in ("deployed", "target_object", "tokenizer")}
        if "refused" in entry:
            print(f"| {entry['model']} | {entry['runtime']} | {entry['precision']} | - | - | - | - | - | "
                  f"{' '.join(entry['refused'].split())[:120]} |")
        else:
            row["b1_speedup"] = base["b1_ms"] / entry["b1_ms"]
            row["b16_speedup"] = base["b16_ms"] / entry["b16_ms"]
            print(f"| {entry['model']} | {entry['runtime']} | {entry['precision']} | {entry['b1_ms']:.2f} | "
                  f"{row['b1_speedup']:.2f}x | {entry['b16_ms']:.1f} | {row['b16_speedup']:.2f}x | "
                  f"{entry['memory_mb']:.1f} | {entry['accuracy']:.4f} |")
        rows.append(row)
    free = [r for r in rows if r["model"] == "teacher" and "b1_speedup" in r
            and r["accuracy"] >= 0.99 * base["accuracy"]]
    if free:
        best = max(free, key=lambda r: r["b1_speedup"])
        print(f"\nfree floor (the teacher at >= 99% of its accuracy, batch 1): {best['runtime']} {best['precision']}, "
              f"{best['b1_speedup']:.2f}x")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        document = {"cpu": features.as_dict(), "rounds": rounds, "repeats": repeats, "rows": rows}
        (args.out / "runtimes.json").write_text(json.dumps(document, indent=2, default=str))


if __name__ == "__main__":
    main()
