"""Task providers: where the teacher model, the data and the metric come from.

A provider is registered through ``autocompress_register_tasks``. ``validate()`` runs the
cheap checks (files exist, columns present, label counts match) before anything expensive;
``load()`` returns the teacher, its tokenizer and the data splits.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from autocompress.data import TaskData, TextDataset, read_unlabeled
from autocompress.errors import InputError
from autocompress.metrics import Accuracy, QualityMetric, classification_metric
from autocompress.prompted import prompt_of
from autocompress.token_data import TaggedDataset


@dataclass(frozen=True)
class TaskOptions:
    """Everything a provider may need, from the CLI or the config file."""

    #: A checkpoint directory or a Hugging Face Hub id (resolved from the local cache by ``autocompress.hub``).
    model: str | Path | None = None
    #: A data file, or a directory written by ``datasets``' ``save_to_disk``.
    data: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    #: Sentence-pair data: the column of each example's second text (None: single texts). Added in plugin API 1.5.
    text_pair_column: str | None = None
    drop_missing: bool = False
    seed: int = 0
    max_length: int = 64
    cache_dir: Path | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    #: Recipe of the one-time teacher fine-tuning from a base model (the demo's, or a user's base checkpoint).
    teacher_epochs: float = 2.0
    teacher_learning_rate: float = 5e-5
    #: Use at most this many training examples (teacher fine-tuning and recovery training).
    train_limit: int | None = None
    #: Show progress bars (the teacher fine-tuning's).
    progress: bool = True
    #: A causal LM used as a classifier (``autocompress.prompted``): the prompt around each text
    #: (None: the default template) and one word per class (None: the label names).
    prompt_template: str | None = None
    label_words: tuple[str, ...] | None = None
    #: In-domain texts without labels that distillation also learns from (``autocompress.data.read_unlabeled``
    #: reads them; ``load_task`` adds them to the task). Added in plugin API 1.6.
    unlabeled: Path | None = None
    #: The classification metric the search optimises and limits (``autocompress.metrics``; None:
    #: accuracy). Added in plugin API 1.6.
    metric: str | None = None


@dataclass(frozen=True)
class TaskInfo:
    """What a task says about its model and data, recorded in run.json (``task_info``) for the
    report and the exported model card."""

    #: The Hugging Face pipeline task a model of this task serves (model card ``pipeline_tag``).
    pipeline_tag: str = "text-classification"
    #: The Hugging Face Hub id of the model the teacher came from, when known (model card ``base_model``).
    base_model: str | None = None
    #: Where the model was read from (a directory, or a Hub id and its cached revision).
    model_source: str | None = None
    #: The base model's license (SPDX-style id as the Hub uses it), when known.
    license: str | None = None
    #: Where the data came from (a file, a saved dataset, the demo's source).
    dataset: str | None = None
    #: The one-time teacher fine-tuning (recipe, cache folder, validation accuracy); None when the
    #: given checkpoint already was the teacher.
    teacher_training: dict[str, Any] | None = None


@dataclass
class LoadedTask:
    teacher: nn.Module
    tokenizer: Any
    data: TaskData
    #: Identifies the teacher and data for caches (content hashes, never only a name).
    fingerprint: str
    description: str
    info: TaskInfo = field(default_factory=TaskInfo)
    #: What the search optimises and limits (``TaskProvider.quality_metric``; ``load_task`` sets it).
    metric: QualityMetric = field(default_factory=Accuracy)


class TaskProvider(ABC):
    """Where a task's teacher, data and metric come from; registered through ``autocompress_register_tasks``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: The Hugging Face pipeline task its models serve; ``autocompress export`` makes folders that
    #: ``transformers.pipeline(pipeline_tag, model=DIR)`` runs (see ``autocompress.export.TASK_TYPES``).
    pipeline_tag: ClassVar[str] = "text-classification"
    #: Trials a search runs when ``--trials`` is not given (plugin API 1.4).
    default_trials: ClassVar[int] = 20
    #: What latency means for its models when ``--latency`` is not given (``MeasureSettings.latency``):
    #: ``prompt`` (a forward pass over the input) or ``token`` (one generated token with the KV cache).
    default_latency: ClassVar[str] = "prompt"

    def __init__(self, options: TaskOptions):
        self.options = options

    @abstractmethod
    def validate(self) -> None:
        """Cheap checks that raise ``InputError`` naming the file/field at fault."""

    @abstractmethod
    def load(self) -> LoadedTask:
        """Load (and if needed fine-tune and cache) the teacher and the data."""

    def quality_metric(self) -> QualityMetric:
        """The task's measure of quality (``autocompress.metrics``): ``--metric`` among the
        classification metrics (accuracy by default). Cheap: the search asks before loading, so a
        bad name is refused first. A task of another kind overrides it (plugin API 1.6)."""
        return classification_metric(self.options.metric)

    def model_type(self) -> str | None:
        """The teacher's ``config.model_type`` when it is known before loading (from config.json, after
        ``validate``), so a model no architecture adapter supports is refused before any expensive
        work; None (the default) when only loading tells (plugin API 1.4)."""
        return None


def unlabeled_texts(options: TaskOptions) -> TextDataset | None:
    """The ``--unlabeled`` texts, read and checked (None without the option): cheap, so the search
    calls it before loading anything, and a bad file is refused first."""
    if options.unlabeled is None:
        return None
    return read_unlabeled(options.unlabeled, options.text_column, options.text_pair_column)


def load_task(provider: TaskProvider, unlabeled: TextDataset | None = None) -> LoadedTask:
    """``provider.load()`` with the provider's quality metric and the ``unlabeled`` texts added to
    its data (``TaskData.unlabeled``): how the search loads a task.

    They are rendered through the teacher's prompt when the teacher is a prompted causal LM (as
    its own splits were), must be pairs exactly when the task's texts are, and change the task's
    fingerprint (distillation's teacher-logit cache and the run directory's check key on it).
    """
    task = provider.load()
    metric = provider.quality_metric()
    if metric != Accuracy():  # a study of another metric is another study: its run directory says so
        task = replace(task, fingerprint=hashlib.sha256(f"{task.fingerprint}\n{metric.name}".encode()).hexdigest())
    task = replace(task, metric=metric)
    if unlabeled is None:
        return task
    if (unlabeled.pairs is None) != (task.data.train.pairs is None):
        raise InputError(f"{provider.options.unlabeled}: the task's examples are "
                         f"{'single texts' if task.data.train.pairs is None else 'sentence pairs'}; the "
                         "unlabeled texts must be too (--text-pair-column names the second text's column)")
    prompt = prompt_of(task.teacher)
    if prompt is not None:
        unlabeled = TextDataset([prompt.render(text) for text in unlabeled.texts], list(unlabeled.labels))
    if isinstance(task.data.train, TaggedDataset):  # a tagger's sentences: words, each tag left to the teacher
        unlabeled = TaggedDataset.unlabeled(unlabeled.texts)
    data = replace(task.data, unlabeled=unlabeled)
    fingerprint = hashlib.sha256(f"{task.fingerprint}\n{data.fingerprint()}".encode()).hexdigest()
    description = f"{task.description}; plus {len(unlabeled)} unlabeled texts from {provider.options.unlabeled}"
    return replace(task, data=data, fingerprint=fingerprint, description=description)


@contextlib.contextmanager
def transformers_progress(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars (e.g. "Loading weights") shown or hidden, as the run's progress setting says."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    if not enabled:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            transformers_logging.enable_progress_bar()


def load_classifier(directory: Path, *, use_safetensors: bool = True, trust_remote_code: bool = False,
                    progress: bool = True, auto_class: str = "AutoModelForSequenceClassification"
                    ) -> tuple[nn.Module, Any]:
    """A local sequence-classification checkpoint (or of another head: ``auto_class`` names the
    transformers Auto class, e.g. ``AutoModelForTokenClassification``) and its tokenizer, offline, in eval mode."""
    import transformers
    from transformers import AutoTokenizer

    with transformers_progress(progress):
        model = getattr(transformers, auto_class).from_pretrained(
            directory, local_files_only=True, use_safetensors=use_safetensors, trust_remote_code=trust_remote_code
        ).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    return model, tokenizer
