"""Task providers: where the teacher model, the data and the metric come from.

A provider is registered through ``autocompress_register_tasks``. ``validate()`` runs the
cheap checks (files exist, columns present, label counts match) before anything expensive;
``load()`` returns the teacher, its tokenizer and the data splits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from autocompress.data import TaskData


@dataclass(frozen=True)
class TaskOptions:
    """Everything a provider may need, from the CLI or the config file."""

    model: Path | None = None
    data: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    drop_missing: bool = False
    seed: int = 0
    max_length: int = 64
    cache_dir: Path | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    #: Demo only: fine-tuning epochs of the teacher, and an optional cap on training examples.
    teacher_epochs: float = 2.0
    train_limit: int | None = None


@dataclass
class LoadedTask:
    teacher: nn.Module
    tokenizer: Any
    data: TaskData
    #: Identifies the teacher and data for caches (content hashes, never only a name).
    fingerprint: str
    description: str


class TaskProvider(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, options: TaskOptions):
        self.options = options

    @abstractmethod
    def validate(self) -> None:
        """Cheap checks that raise ``InputError`` naming the file/field at fault."""

    @abstractmethod
    def load(self) -> LoadedTask:
        """Load (and if needed fine-tune and cache) the teacher and the data."""


def load_classifier(directory: Path, *, use_safetensors: bool = True, trust_remote_code: bool = False
                    ) -> tuple[nn.Module, Any]:
    """A local sequence-classification checkpoint and its tokenizer, offline, in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        directory, local_files_only=True, use_safetensors=use_safetensors, trust_remote_code=trust_remote_code
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    return model, tokenizer
