"""Fine-tune a base checkpoint into the teacher once, and cache it by content hash."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from autocompress.data import TaskData
from autocompress.hashing import directory_sha256
from autocompress.training import accuracy, encode, fine_tune

RECIPE_VERSION = 1


def cached_teacher(
    base_model_dir: Path,
    data: TaskData,
    cache_dir: Path,
    *,
    epochs: float,
    max_length: int,
    seed: int,
    learning_rate: float = 5e-5,
    batch_size: int = 32,
) -> tuple[Path, dict[str, Any]]:
    """Directory of the fine-tuned teacher (trained now if not cached) and its training record."""
    recipe = {
        "recipe_version": RECIPE_VERSION,
        "base_model": directory_sha256(base_model_dir),
        "data": data.fingerprint(),
        "epochs": epochs,
        "max_length": max_length,
        "seed": seed,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    target = cache_dir / "teachers" / key
    record_path = target / "teacher.json"
    if record_path.is_file():
        return target, json.loads(record_path.read_text())

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model_dir, local_files_only=True, num_labels=data.num_labels, use_safetensors=True
    )
    fine_tune(
        model,
        encode(tokenizer, data.train, max_length),
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        progress="fine-tuning teacher (once, then cached)",
    )
    record = dict(recipe, validation_accuracy=accuracy(model, encode(tokenizer, data.validation, max_length)))
    # Write to a temporary sibling, then rename: a killed fine-tuning never leaves a half teacher.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "teacher.json").write_text(json.dumps(record, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, record
