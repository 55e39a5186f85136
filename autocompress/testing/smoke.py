"""The small real demo task that autocompress's slow tests and the benchmarks' ``--quick`` runs share.

all-MiniLM-L6-v2 fine-tuned for one epoch on the first 1,200 training sentences of the demo data
(about 0.67 validation accuracy, far above chance). The teacher cache is keyed by the recipe and
the data, so every user of these options gets the same cached teacher: a test session (and a
machine) fine-tunes it at most once, in about a minute on 2 cores.
"""

from __future__ import annotations

#: ``autocompress.task.TaskOptions`` fields of the smoke demo task.
SMOKE_DEMO_OPTIONS = {"train_limit": 1200, "teacher_epochs": 1.0}


def smoke_demo_flags() -> list[str]:
    """The same options as ``autocompress search`` flags."""
    return ["--train-limit", str(SMOKE_DEMO_OPTIONS["train_limit"]),
            "--teacher-epochs", f"{SMOKE_DEMO_OPTIONS['teacher_epochs']:g}"]
