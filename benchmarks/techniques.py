"""Each technique alone on the demo model, measured side by side in one run.

For every variant: parameter ratio, memory ratio (model bytes, shared weights once), latency
ratio (median of interleaved runs, teacher vs variant, batch 1 and batch 16, sequence 64,
2 threads) and test accuracy after a short distillation recovery (structure techniques; a variant
may bring its own distillation settings, e.g. hidden-state distillation for width pruning) or as
is (quantization).

Width pruning to 288 of 384 channels has about the parameters of half the layers (3 of 6): the
two rows side by side compare a narrower model with a shallower one at equal size.

    python benchmarks/techniques.py            # the published table (about 20 minutes on 2 cores)
    python benchmarks/techniques.py --quick    # smoke run: smoke teacher, few runs, tiny recovery, 100 sentences
    python benchmarks/techniques.py --only width,sharing   # the variants whose label contains a word

It prints section 5 of benchmarks/RESULTS.md exactly as that file holds it (heading, command,
machine, table); ``--out DIR`` also writes it to ``DIR/techniques.md`` and the rows to
``DIR/techniques.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
from section import Section, deployed, recovered

from autocompress.arch import adapter_for
from autocompress.measure import dummy_inputs, model_bytes, parameter_count, thread_count, time_forward
from autocompress.plugin_manager import build_host
from autocompress.task import TaskOptions
from autocompress.technique import ApplyContext, PlanStep, Stage
from autocompress.testing.smoke import SMOKE_DEMO_OPTIONS
from autocompress.training import accuracy, encode

VARIANTS = {
    "int8 dynamic (quantization dtype=int8)": [("quantization", {"dtype": "int8"})],
    "bf16 weights (quantization dtype=bf16)": [("quantization", {"dtype": "bf16"})],
    "FFN L1 pruning, keep 50%": [("ffn_pruning", {"keep_fraction": 0.5})],
    "head pruning 50% (gradient)": [("head_pruning", {"fraction": 0.5, "scoring": "gradient"})],
    "low-rank SVD, rank 25%, attention+FFN": [("low_rank", {"rank_ratio": 0.25, "layers": "both"})],
    "layer drop, keep 3 of 6 (every other)": [("layer_drop", {"keep_layers": 3, "strategy": "every_other"})],
    "vocabulary trim (min_count=1)": [("vocab_trim", {"min_count": 1})],
    "width pruning to 256 of 384 (8 heads), hidden-state KD": [
        ("width_pruning", {"width_fraction": 2 / 3}), ("distillation", {"hidden_weight": 1.0})],
    "width pruning to 288 of 384 (9 heads; params of 3 layers), hidden-state KD": [
        ("width_pruning", {"width_fraction": 0.75}), ("distillation", {"hidden_weight": 1.0})],
    "layer sharing, groups of 2 (best member)": [("layer_sharing", {"group_size": 2, "representative": "best"})],
    "layer sharing, groups of 3 (best member)": [("layer_sharing", {"group_size": 3, "representative": "best"})],
    "3 layers + FFN 50% + int8": [("layer_drop", {"keep_layers": 3}), ("ffn_pruning", {"keep_fraction": 0.5}),
                                  ("quantization", {"dtype": "int8"})],
}


def interleaved_ratio(teacher, variant, batch: int, rounds: int, repeats: int, warmup: int = 3
                      ) -> tuple[float, float, float]:
    vocab = min(teacher.get_input_embeddings().num_embeddings, variant.get_input_embeddings().num_embeddings)
    inputs = dummy_inputs(batch, 64, vocab)
    base, cand = [], []
    with thread_count(2):
        time_forward(teacher, inputs, warmup, 1)
        time_forward(variant, inputs, warmup, 1)
        for _ in range(rounds):  # A B A B ...: drift of a shared machine cancels in the ratio
            base += time_forward(teacher, inputs, 1, repeats)
            cand += time_forward(variant, inputs, 1, repeats)
    return statistics.median(base), statistics.median(cand), statistics.median(base) / statistics.median(cand)


HEADER = ("| variant | params x | memory x | latency b1 (ms) | speed-up b1 | latency b16 (ms) | speed-up b16 "
          "| test acc | % of teacher | wall s |")


def machine_line() -> str:
    """CPU model, cores, OS and library versions: what RESULTS.md states with every table."""
    import platform

    import transformers

    from autocompress import __version__

    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return (f"{cpu}, {os.cpu_count()} cores (2 threads used), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"autocompress {__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recovery-epochs", type=float, default=None)
    parser.add_argument("--only", default="", help="comma-separated words: run only the variants whose label has one")
    parser.add_argument("--out", type=Path, default=None, help="also write techniques.md and techniques.json here")
    args = parser.parse_args()
    words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    variants = {label: steps for label, steps in VARIANTS.items()
                if not words or any(word in label.lower() for word in words)}
    # Quick: one round of 2 timed runs after 1 warm-up (the published table: 8 rounds of 5 after 3).
    rounds, repeats, warmup = (1, 2, 1) if args.quick else (8, 5, 3)
    epochs = args.recovery_epochs if args.recovery_epochs is not None else (0.05 if args.quick else 0.5)

    host = build_host()
    # Quick: the smoke demo task the test suite shares (one cached teacher, fine-tuned in a minute).
    options = TaskOptions(**SMOKE_DEMO_OPTIONS) if args.quick else TaskOptions()
    task = host.tasks["demo"](options).load()
    teacher = task.teacher.eval()
    test_data = task.data.test.head(100) if args.quick else task.data.test
    test = encode(task.tokenizer, test_data, 64)
    teacher_accuracy = accuracy(teacher, test)
    command = "python benchmarks/techniques.py" + (" --quick" if args.quick else "")
    lines = [
        "## 5. Each technique alone on the demo model", "",
        f"`{command}` (teacher cached beforehand). Teacher: test accuracy {teacher_accuracy:.4f} on "
        f"{len(test_data)} sentences, {parameter_count(teacher) / 1e6:.2f} M parameters, "
        f"{model_bytes(teacher) / 2**20:.1f} MB. After each structure technique, a short recovery: distillation "
        f"for {epochs:g} epoch(s). Latency: median of {rounds}x{repeats} runs interleaved with the teacher's "
        "(teacher, variant, teacher, ...), sequence length 64, 2 threads; `x` columns are teacher / variant.", "",
        f"Machine: {machine_line()}.", "",
        HEADER, "|" + "---|" * 10,
    ]
    section = Section("techniques", lines)
    for label, steps in variants.items():
        started = time.perf_counter()
        student = copy.deepcopy(teacher)
        context = ApplyContext(adapter=adapter_for(student, host.architectures), tokenizer=task.tokenizer,
                               data=task.data, teacher=teacher, max_length=64, seed=0)
        plan = [PlanStep(host.techniques[name], host.techniques[name].make_config(values)) for name, values in steps]
        structure = [s for s in plan if s.technique.stage == Stage.STRUCTURE]
        post = [s for s in plan if s.technique.stage == Stage.POST]
        own = dict(next((values for name, values in steps if name == "distillation"), {}))
        # A short recovery after structure steps, as the search would do.
        student = recovered(student, structure, {"epochs": epochs, "learning_rate": 1e-4, **own}, context, host)
        final = deployed(student, post, context)
        _, b1, r1 = interleaved_ratio(teacher, final, 1, rounds, repeats, warmup)
        _, b16, r16 = interleaved_ratio(teacher, final, 16, rounds, repeats, warmup)
        acc = accuracy(final, encode(context.tokenizer, test_data, 64))
        row = {"variant": label, "params_x": parameter_count(teacher) / parameter_count(final),
               "memory_x": model_bytes(teacher) / model_bytes(final), "b1_ms": b1, "speedup_b1": r1,
               "b16_ms": b16, "speedup_b16": r16, "accuracy": acc, "pct_teacher": 100 * acc / teacher_accuracy,
               "wall_s": time.perf_counter() - started}
        section.add(f"| {label} | {row['params_x']:.2f} | {row['memory_x']:.2f} | {b1:.2f} | {r1:.2f}x | {b16:.1f} | "
                    f"{r16:.2f}x | {acc:.4f} | {row['pct_teacher']:.1f}% | {row['wall_s']:.0f} |", row)
        del student, final
        torch.set_num_threads(2)
    section.write(args.out, teacher_accuracy=teacher_accuracy)


if __name__ == "__main__":
    main()
