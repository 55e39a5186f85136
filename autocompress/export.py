"""``autocompress export``: one candidate of a run as a directory that ships.

The directory holds what ``best/`` holds (safetensors weights, config, tokenizer,
``autocompress.json``) plus a model card (README.md) with the measured numbers and how they
were measured, and optionally an ONNX file checked against ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from autocompress.errors import InputError
from autocompress.model_io import MANIFEST, loads_with_plain_transformers
from autocompress.report.facts import measurement_note, provenance_rows, trial_plan
from autocompress.report.run import RunData
from autocompress.study.layout import RunLayout
from autocompress.study.record import TEST_ACCURACY, VAL_ACCURACY


def candidate_dir(run_dir: Path, run: RunData, trial: int | None) -> tuple[int, Path]:
    """The saved weights of ``trial`` (default: the recommended one), or an error saying what is kept."""
    if trial is None:
        trial = run.document["recommended"]
        if trial is None:
            raise InputError(f"{run_dir}: no candidate met the limits, so there is no recommended model; "
                             "pass --trial N (see trials.csv) for a kept candidate")
    if trial not in set(run.frame["number"]):
        raise InputError(f"--trial {trial}: no such trial in study '{run.study.study_name}' "
                         f"(trials 0-{len(run.frame) - 1})")
    layout = RunLayout(run_dir)
    source = layout.candidate(trial)
    if not (source / MANIFEST).is_file():
        kept = [number for number, path in layout.saved_candidates().items() if (path / MANIFEST).is_file()]
        row = run.frame[run.frame["number"] == trial].iloc[0]
        why = ("it did not meet the limits" if not row["feasible"]
               else "it fell off the Pareto front, and only front candidates are kept")
        raise InputError(f"--trial {trial}: no saved weights ({why}); exportable trials: "
                         f"{', '.join(map(str, kept)) or 'none'}")
    return trial, source


def export(run_dir: Path, run: RunData, to: Path, trial: int | None = None, onnx: bool = False,
           host: Any = None) -> dict[str, Any]:
    """Write the candidate to ``to`` (must not exist or be empty). Returns what was written.

    ``host`` (the plugin host) rebuilds the model for ``onnx``; required then.
    """
    trial, source = candidate_dir(run_dir, run, trial)
    if to.exists() and any(to.iterdir()):
        raise InputError(f"--to {to}: exists and is not empty; choose a new directory")
    staging = to.with_name(f".{to.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    row = run.frame[run.frame["number"] == trial].iloc[0]
    card = model_card(run, row, loads_with_plain_transformers(staging))
    (staging / "README.md").write_text(card, encoding="utf-8")
    written: dict[str, Any] = {"trial": trial, "directory": str(to)}
    if onnx:
        try:
            written["onnx"] = _export_onnx(staging, run, host)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # nothing half-written is left behind
            raise
    if to.exists():
        to.rmdir()
    staging.rename(to)
    if onnx:
        written["onnx"]["path"] = str(to / Path(written["onnx"]["path"]).name)
    return written


def _export_onnx(directory: Path, run: RunData, host: Any) -> dict[str, Any]:
    from autocompress.model_io import load_pretrained
    from autocompress.onnx_export import check_onnx, export_onnx

    model, tokenizer = load_pretrained(directory, host.techniques, host.architectures)
    seq_len = int(run.record.get("measure", {}).get("seq_len", 64))
    path = export_onnx(model, directory / "model.onnx", seq_len=seq_len)
    return {"path": str(path), "check": check_onnx(model, tokenizer, path)}


def model_card(run: RunData, row: Any, plain_loadable: bool) -> str:
    base = run.baseline
    record = run.trials[int(row["number"])]
    plan = trial_plan(record)
    manifest_plan = json.dumps([dataclasses.asdict(step) for step in record.steps or ()])
    plain = ("Plain `transformers.AutoModelForSequenceClassification.from_pretrained(dir)` loads this directory "
             "too: every layer has the shape its config describes and no post-training step is recorded."
             if plain_loadable else
             "Plain `transformers` alone cannot rebuild this model (its layer shapes differ from what the config "
             "describes, or a post-training step is recorded), hence the one autocompress call above.")
    lines = [
        f"# Compressed classifier (autocompress trial #{int(row['number'])})", "",
        f"Made by autocompress from the task '{run.record.get('task', '?')}' "
        f"({run.record.get('task_description', '')}).", "",
        f"**Techniques**: {plan}.", "",
        "## Measured", "",
        "| | this model | teacher | ratio |", "|---|---:|---:|---:|",
        f"| test accuracy | {row[TEST_ACCURACY]:.4f} | {base[TEST_ACCURACY]:.4f} | "
        f"{100 * row[TEST_ACCURACY] / base[TEST_ACCURACY]:.1f}% |",
        f"| validation accuracy | {row[VAL_ACCURACY]:.4f} | {base[VAL_ACCURACY]:.4f} | |",
        f"| latency median (ms) | {row['latency_ms']:.2f} | {row['teacher_latency_ms']:.2f} | "
        f"{row['speedup']:.2f}× faster |",
        f"| latency p90 (ms) | {row['latency_p90_ms']:.2f} | {base['latency_p90_ms']:.2f} | |",
        f"| memory (MB) | {row['memory_mb']:.1f} | {base['memory_mb']:.1f} | "
        f"{base['memory_mb'] / row['memory_mb']:.2f}× smaller |",
        f"| parameters | {int(row['parameters']):,} | {int(base['parameters']):,} | |", "",
        measurement_note(run), "",
        "## Load it", "",
        "```python",
        "import autocompress",
        "model, tokenizer = autocompress.load_pretrained(\"path/to/this/directory\")",
        "logits = model(**tokenizer([\"a sentence\"], return_tensors=\"pt\")).logits",
        "```", "",
        "`load_pretrained` lets each technique recorded in `autocompress.json` rebuild the structure it "
        "changed (per-layer head counts and FFN widths, low-rank factors, shared layers), ties shared weights "
        "again and re-applies post-training steps such as int8 quantization. It unpickles nothing: weights are "
        "safetensors.",
        plain, "",
        "## Provenance", "", "| | |", "|---|---|",
        *[f"| {k} | {v.replace('|', '/')} |" for k, v in provenance_rows(run)],
        f"| plan | `{manifest_plan}` |", "",
    ]
    return "\n".join(lines)
