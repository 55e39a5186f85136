"""Distillation with a quarter of the labels: what unlabeled text and augmentation add.

The demo's 8,500 labelled sentences hide how distilled students fare when a user has few labels.
Here the teacher (the demo's) stays, but recovery sees only a seeded 25% of the training labels.
Each student (3 or 4 of the 6 layers, every other one, then int8 dynamic) is recovered by
distillation in the same number of optimiser steps on:

- ``25% labels``: the labelled quarter alone (more epochs over fewer sentences);
- ``+ unlabeled``: plus the other 75% of the training texts without their labels (``--unlabeled``);
- ``+ augmentation``: plus word-replaced copies of the labelled quarter up to the full split's size
  (``augment_to``, TinyBERT-style; no unlabeled text);
- ``+ both``: the unlabeled texts and copies up to twice the split's size;
- ``all labels``: the full labelled split, for reference.

Test accuracy (the int8 model's) is printed as a percentage of the fp32 teacher's. Only accuracy
is measured (no timing), so the run need not have the machine to itself; the JSON keeps each
row's wall time.

    python benchmarks/small_data.py            # both depths, 2 epochs' steps (about 1 hour on 2 cores)
    python benchmarks/small_data.py --layers 4 --epochs 1   # the 4-layer student alone, half the steps
    python benchmarks/small_data.py --quick    # smoke run: smoke teacher, tiny data, a few steps

``--out DIR`` also writes the table to ``DIR/small_data.md`` and the rows to ``DIR/small_data.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import random
import time
from pathlib import Path

import torch
from section import Section, deployed, recovered

from autocompress.arch import adapter_for
from autocompress.data import UNLABELED, TaskData, TextDataset
from autocompress.plugin_manager import build_host
from autocompress.task import TaskOptions
from autocompress.technique import ApplyContext, PlanStep
from autocompress.testing.smoke import SMOKE_DEMO_OPTIONS
from autocompress.training import accuracy, encode

LABELLED_FRACTION = 0.25
BATCH = 32


def split_labels(train: TextDataset, fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    """A seeded ``fraction`` of ``train`` with its labels, and the rest without them."""
    chosen = set(random.Random(seed).sample(range(len(train)), round(fraction * len(train))))
    labelled = train.subset(sorted(chosen))
    rest = train.subset([i for i in range(len(train)) if i not in chosen])
    return labelled, dataclasses.replace(rest, labels=[UNLABELED] * len(rest))


def variants(full: TaskData, labelled: TextDataset, unlabeled: TextDataset) -> dict[str, tuple[TaskData, dict]]:
    """Label -> (the task data recovery sees, distillation fields besides epochs)."""
    few = dataclasses.replace(full, train=labelled, unlabeled=None)
    size = len(full.train)
    return {
        "25% labels": (few, {}),
        "+ unlabeled": (dataclasses.replace(few, unlabeled=unlabeled), {"unlabeled": True}),
        "+ augmentation": (few, {"augment_to": size}),
        "+ both": (dataclasses.replace(few, unlabeled=unlabeled), {"unlabeled": True, "augment_to": 2 * size}),
        "all labels": (dataclasses.replace(full, unlabeled=None), {}),
    }


def set_size(data: TaskData, fields: dict) -> int:
    """How many texts the distillation set holds (labelled, unlabeled, augmented copies)."""
    size = len(data.train) + (len(data.unlabeled) if fields.get("unlabeled") and data.unlabeled is not None else 0)
    return max(size, fields.get("augment_to", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=float, default=None,
                        help="optimiser steps of every recovery, in epochs of the full labelled split (default: 2)")
    parser.add_argument("--layers", default=None, help="comma-separated student depths (default: 3,4; quick: 3)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    epochs = args.epochs if args.epochs is not None else (0.2 if args.quick else 2.0)
    depths = tuple(int(d) for d in args.layers.split(",")) if args.layers else ((3,) if args.quick else (3, 4))

    host = build_host()
    options = TaskOptions(**SMOKE_DEMO_OPTIONS) if args.quick else TaskOptions()
    task = host.tasks["demo"](options).load()
    teacher = task.teacher.eval()
    full = task.data
    if args.quick:
        full = dataclasses.replace(full, train=full.train.head(200))
    test_data = full.test.head(100) if args.quick else full.test
    test = encode(task.tokenizer, test_data, 64)
    teacher_accuracy = accuracy(teacher, test)
    labelled, unlabeled = split_labels(full.train, LABELLED_FRACTION, seed=0)
    steps = max(1, round(epochs * math.ceil(len(full.train) / BATCH)))
    command = "python benchmarks/small_data.py" + (" --quick" if args.quick else "")
    command += (f" --epochs {args.epochs:g}" if args.epochs is not None else "")
    command += (f" --layers {args.layers}" if args.layers else "")
    lines = [
        "## 8. Distillation with a quarter of the labels", "",
        f"`{command}`. Teacher: the demo's, test accuracy {teacher_accuracy:.4f} on {len(test_data)} sentences. "
        f"Recovery sees {len(labelled)} of the {len(full.train)} training labels (seeded); the other "
        f"{len(unlabeled)} training texts are the unlabeled text. Every student: every other layer kept, "
        f"distillation (temperature 2, alpha 0.5, learning rate 1e-4) for {steps} optimiser steps of {BATCH} "
        "(whatever the set's size), then int8 dynamic. Accuracy is the int8 student's, on the test split.", "",
        "| student | recovery data | texts | test accuracy | % of teacher |", "|---|---|---|---|---|",
    ]
    section = Section("small_data", lines)
    layer_drop = host.techniques["layer_drop"]
    quantization = host.techniques["quantization"]
    for depth in depths:
        for label, (data, fields) in variants(full, labelled, unlabeled).items():
            started = time.perf_counter()
            size = set_size(data, fields)
            settings = {"epochs": steps / math.ceil(size / BATCH), "learning_rate": 1e-4, "unlabeled": False,
                        **fields}
            student = copy.deepcopy(teacher)
            context = ApplyContext(adapter=adapter_for(student, host.architectures), tokenizer=task.tokenizer,
                                   data=data, teacher=teacher, max_length=64, seed=0)
            keep = layer_drop.make_config({"keep_layers": depth, "strategy": "every_other"})
            structure = [PlanStep(layer_drop, keep)]
            student = recovered(student, structure, settings, context, host)
            final = deployed(student, [PlanStep(quantization, quantization.make_config({"dtype": "int8"}))], context)
            acc = accuracy(final, test)
            row = {"layers": depth, "recovery": label, "texts": size, "accuracy": acc,
                   "pct_teacher": 100 * acc / teacher_accuracy, "wall_s": time.perf_counter() - started}
            section.add(f"| {depth} layers + int8 | {label} | {size} | {acc:.4f} | {row['pct_teacher']:.1f}% |", row)
            del student, final
            torch.set_num_threads(2)
    section.write(args.out, teacher_accuracy=teacher_accuracy, labelled=len(labelled), steps=steps)


if __name__ == "__main__":
    main()
