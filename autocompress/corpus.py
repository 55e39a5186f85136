"""Text for a language-model task (``--task lm``): reading a corpus file and splitting it.

A corpus file is one of:

- ``.txt``: plain UTF-8 text, **one document per non-empty line** (as ``--unlabeled`` reads a
  .txt file); blank lines are skipped;
- ``.jsonl`` / ``.ndjson`` with a text field (``--text-column``, default ``text``) on every line;
- ``.jsonl`` / ``.ndjson`` chat data: every line holds ``messages``, a list of
  ``{"role": ..., "content": ...}`` objects, rendered through the tokenizer's chat template when
  the task loads (a tokenizer without one is refused).

Anything else (another file type, a JSON lines file with neither field, no text at all) is a
``DataError`` naming the file, before any model loads. Documents are split at random, seeded, into
train / validation / test (80 / 10 / 10, each split at least one document); the search tunes on
validation and reports test. No torch here: the search reads the corpus before it loads anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocompress.data import UNLABELED, TaskData, TextDataset, json_records
from autocompress.errors import DataError

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: Shares of the documents in the validation and test splits (the rest is train).
VALIDATION_SHARE = TEST_SHARE = 0.1


@dataclass(frozen=True)
class Documents(TextDataset):
    """A language-model split: texts whose labels are the texts themselves (next tokens), so every
    label is ``UNLABELED``. ``autocompress.training.encode`` encodes it for next-token prediction
    (``autocompress.language_model.encode_documents``)."""

    @classmethod
    def of(cls, texts: list[str]) -> Documents:
        return cls(list(texts), [UNLABELED] * len(texts))


@dataclass(frozen=True)
class Corpus:
    """A corpus file as read: plain texts, or chat conversations still to be rendered (``messages``)."""

    path: Path
    texts: list[str] | None = None
    conversations: list[list[dict[str, Any]]] | None = None

    @property
    def chat(self) -> bool:
        return self.conversations is not None

    def __len__(self) -> int:
        return len(self.conversations if self.chat else self.texts)

    def rendered(self, tokenizer: Any) -> list[str]:
        """The documents as text: chat conversations through ``tokenizer``'s chat template."""
        if not self.chat:
            return list(self.texts)
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(f"{self.path}: chat data (messages) needs a tokenizer with a chat template, and the "
                            "model's tokenizer has none; give plain texts (a text field) instead")
        return [tokenizer.apply_chat_template(messages, tokenize=False) for messages in self.conversations]


def _messages(value: Any, path: Path, number: int) -> list[dict[str, Any]]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in value)):
        raise DataError(f"{path}: line {number}: 'messages' must be a non-empty list of "
                        "{\"role\": ..., \"content\": ...} objects with string values")
    return value


def _read_jsonl(path: Path, text: str, text_column: str) -> Corpus:
    records = json_records(path, text)
    if not records:
        raise DataError(f"{path}: no text in the file")
    if "messages" in records[0][1]:
        return Corpus(path, conversations=[_messages(r.get("messages"), path, n) for n, r in records])
    texts = []
    for number, record in records:
        value = record.get(text_column)
        if not isinstance(value, str):
            raise DataError(f"{path}: line {number} has no text field '{text_column}' (fields: "
                            f"{', '.join(map(str, record)) or 'none'}); set --text-column, or give chat data with "
                            "a 'messages' field on every line")
        if value.strip():
            texts.append(value)
    return Corpus(path, texts=texts)


def read_corpus(path: str | Path, text_column: str = "text") -> Corpus:
    """The corpus in ``path`` (see the module docstring); a DataError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path}: file not found")
    if not path.is_file():
        raise DataError(f"--data {path}: not a file (a language-model task reads a .txt or .jsonl file)")
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES + JSONL_SUFFIXES:
        raise DataError(f"--data {path}: unsupported file type '{path.suffix}' for a language-model task "
                        f"(supported: .txt with one document per line; .jsonl/.ndjson with a text field or "
                        "chat 'messages')")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    if suffix in TEXT_SUFFIXES:
        corpus = Corpus(path, texts=[line.strip() for line in text.splitlines() if line.strip()])
    else:
        corpus = _read_jsonl(path, text, text_column)
    if len(corpus) < 3:
        raise DataError(f"{path}: {len(corpus)} document(s); a language-model task needs at least 3 (one each "
                        "for train, validation and test)")
    return corpus


def split_documents(texts: list[str], seed: int) -> TaskData:
    """``texts`` shuffled with ``seed`` and split 80 / 10 / 10 into train / validation / test (each at
    least one document); no label names."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_validation = max(1, round(VALIDATION_SHARE * len(texts)))
    n_test = max(1, round(TEST_SHARE * len(texts)))
    validation, test = order[:n_validation], order[n_validation:n_validation + n_test]
    train = order[n_validation + n_test:]

    def split(indices: list[int]) -> Documents:
        return Documents.of([texts[i] for i in indices])

    return TaskData(split(train), split(validation), split(test), label_names=[])
