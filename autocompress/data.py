"""Loading a user's classification data: CSV/TSV, JSON lines or Parquet, validated, split.

(Directories saved by Hugging Face ``datasets`` are read by ``autocompress.hf_data``.)

Every problem is a ``DataError`` naming the file and the column or rows at fault, raised
before any model is loaded or trained.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autocompress.errors import DataError

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


#: The label of a text nobody labelled (``TaskData.unlabeled``, augmented copies): distillation
#: learns from the teacher's output on it alone.
UNLABELED = -1


@dataclass(frozen=True)
class TextDataset:
    """One split: texts and their label indices (0..K-1), aligned by position; for a sentence-pair task
    (NLI, duplicate questions, reranking) also the second text of each example (``pairs``), which the
    tokenizer encodes after the first (``autocompress.training.encode``)."""

    texts: list[str]
    labels: list[int]
    pairs: list[str] | None = None

    def __post_init__(self):
        if self.pairs is not None and len(self.pairs) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.pairs)} second texts")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def scores(self) -> bool:
        """True when the labels are scores (floats: a regression task), not class indices."""
        return any(isinstance(label, float) for label in self.labels)

    @property
    def vectors(self) -> bool:
        """True when each label is a vector of floats (a sentence-embedding task: the teacher's
        embedding of the text, ``autocompress.embedding``), not a class index or a score."""
        first = self.labels[0] if self.labels else None
        return isinstance(first, list | tuple) and bool(first) and isinstance(first[0], float)

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """The examples at ``indices``, in that order (second texts included), as a split of the same kind."""
        indices = [int(i) for i in indices]
        kind = list if self.vectors else float if self.scores else int
        return type(self)([self.texts[i] for i in indices], [kind(self.labels[i]) for i in indices],
                           None if self.pairs is None else [self.pairs[i] for i in indices])

    def head(self, n: int) -> TextDataset:
        """The first ``n`` examples (the whole dataset when it is not longer)."""
        return self if len(self) <= n else self.subset(range(n))

    def every_text(self) -> list[str]:
        """Every text the model reads: the first texts, then the second texts of a pair task."""
        return list(self.texts) + list(self.pairs or ())

    def concat(self, *others: TextDataset) -> TextDataset:
        """This split followed by ``others`` (all single texts, or all pairs)."""
        parts = (self, *others)
        if len({part.pairs is None for part in parts}) > 1:
            raise ValueError("cannot join single texts with sentence pairs")
        return type(self)([t for part in parts for t in part.texts], [y for part in parts for y in part.labels],
                           None if self.pairs is None else [t for part in parts for t in part.pairs])


@dataclass(frozen=True)
class TaskData:
    """A classification task's three splits and the names behind the label indices."""

    train: TextDataset
    validation: TextDataset
    test: TextDataset
    label_names: list[str]  # index i -> the original label value as a string
    #: In-domain texts without labels (``--unlabeled``; labels all ``UNLABELED``): distillation
    #: trains on the teacher's outputs on them too. None: there are none. Added in plugin API 1.6.
    unlabeled: TextDataset | None = None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def regression(self) -> bool:
        """A regression task: one score per example (``label_names`` holds the label column's name alone)."""
        return self.train.scores

    def training_texts(self) -> list[str]:
        """Every text recovery may train on: the training split's (second texts included) and the unlabeled ones."""
        return self.train.every_text() + (self.unlabeled.every_text() if self.unlabeled is not None else [])

    def limit_train(self, limit: int | None) -> TaskData:
        """The same task with at most ``limit`` training examples (None: all); evaluation splits unchanged."""
        if limit is None or len(self.train) <= limit:
            return self
        return replace(self, train=self.train.head(limit))

    def fingerprint(self) -> str:
        """SHA-256 of every split's content (the unlabeled texts too) and the label names (stable across runs)."""
        digest = hashlib.sha256()
        splits = (self.train, self.validation, self.test) + ((self.unlabeled,) if self.unlabeled is not None else ())
        for split in splits:
            content = [split.texts, split.labels] + ([split.pairs] if split.pairs is not None else [])
            digest.update(json.dumps(content, ensure_ascii=False).encode())
        digest.update(json.dumps(self.label_names).encode())
        return digest.hexdigest()


def json_records(path: Path, text: str) -> list[tuple[int, dict]]:
    """The objects of a JSON-lines file's ``text``, each with its line number (blank lines skipped); a
    DataError naming the file and line for a line that is not a JSON object. Every JSON-lines reader
    (tables, corpora, tagged sentences) reads through this."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg}); "
                            "JSON lines need one object per line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object; "
                            "JSON lines need one object per line") from None
        records.append((number, record))
    return records


def _read_jsonl(path: Path, text: str):
    import pandas as pd

    records = json_records(path, text)
    return pd.DataFrame([record for _, record in records], index=[number for number, _ in records])


def _read_frame(path: Path):
    """The file as a DataFrame whose index is the row number a user sees in the file."""
    import pandas as pd

    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}' "
                        f"(supported: {', '.join(sorted(SUFFIXES))})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
        frame.index = range(1, len(frame) + 1)
        return frame
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at byte {exc.start}, "
                        f"line {line}); re-save the file as UTF-8") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    if kind == "jsonl":
        return _read_jsonl(path, raw.decode("utf-8"))
    separator = "\t" if kind == "tsv" else ","
    try:
        # A row longer than the header would otherwise silently become the index and shift every
        # column; index_col=False plus this warning as an error turns that into a clear message.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, sep=separator, dtype=object, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: a row has more fields than the header line; quote texts that contain "
                        f"{separator!r}") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot parse as {kind.upper()}: {str(exc).strip()}") from None
    frame.index = range(2, len(frame) + 2)  # row numbers as a spreadsheet shows them (header is row 1)
    return frame


def read_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               drop_missing: bool = False, pair_column: str | None = None
               ) -> tuple[list[str], list[object], list[str] | None]:
    """Texts, raw labels and (with ``pair_column``) second texts from a CSV/TSV, JSON lines or Parquet
    file (chosen by suffix).

    Rows with an empty text or label are an error naming them, or are dropped with ``drop_missing``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    return column_values(_read_frame(path), str(path), text_column, label_column, drop_missing, pair_column)


def read_unlabeled(path: str | Path, text_column: str = "text", pair_column: str | None = None) -> TextDataset:
    """Texts without labels (``--unlabeled``): a plain-text file (``.txt``, one text per line), or a
    CSV/TSV, JSON lines or Parquet file with the text column (and ``pair_column`` for pairs).

    Empty lines and rows with an empty text are skipped (this is bulk text, not labelled data); a
    file with no text at all, a missing column or an unsupported type is a DataError naming it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: unlabeled-text file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.suffix.lower() == ".txt":
        if pair_column is not None:
            raise DataError(f"{path}: a .txt file holds single texts; sentence pairs (--text-pair-column) need "
                            "a CSV, TSV, JSON lines or Parquet file with both columns")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
        texts, pairs = [line.strip() for line in lines if line.strip()], None
    else:
        if path.suffix.lower() not in SUFFIXES:
            raise DataError(f"{path}: unsupported file type '{path.suffix}' "
                            f"(supported: .txt, {', '.join(sorted(SUFFIXES))})")
        frame = _read_frame(path)
        wanted = [(text_column, "--text-column")] + ([(pair_column, "--text-pair-column")] if pair_column else [])
        for column, option in wanted:
            if column not in frame.columns:
                raise DataError(f"{path}: column '{column}' not found (columns: "
                                f"{', '.join(map(str, frame.columns)) or 'none'}); set {option}")
        columns = [frame[column] for column, _ in wanted]
        keep = ~columns[0].isna()
        for column in columns:
            keep &= ~column.isna() & (column.astype(str).str.strip() != "")
        texts = [str(t) for t in columns[0][keep]]
        pairs = [str(t) for t in columns[1][keep]] if pair_column else None
    if not texts:
        raise DataError(f"{path}: no text in the unlabeled-text file")
    return TextDataset(texts, [UNLABELED] * len(texts), pairs)


def check_columns(columns: Sequence[str], source: str, text_column: str, label_column: str,
                  pair_column: str | None = None) -> list[str]:
    """The columns to read (text, label, and the second texts when ``pair_column`` is given), each
    checked to be among ``columns``; a DataError naming the missing one and its option otherwise."""
    wanted = [(text_column, "--text-column"), (label_column, "--label-column")]
    if pair_column is not None:
        if pair_column in (text_column, label_column):
            raise DataError(f"{source}: --text-pair-column '{pair_column}' is also the "
                            f"{'text' if pair_column == text_column else 'label'} column; name the column of the "
                            "second texts")
        wanted.append((pair_column, "--text-pair-column"))
    for column, option in wanted:
        if column not in columns:
            raise DataError(f"{source}: column '{column}' not found (columns: {', '.join(columns) or 'none'}); "
                            f"set {option}")
    return [column for column, _ in wanted]


def column_values(frame, source: str, text_column: str, label_column: str, drop_missing: bool,
                  pair_column: str | None = None) -> tuple[list[str], list[object], list[str] | None]:
    """Texts, raw labels and second texts (None without ``pair_column``) of a DataFrame whose index is
    the row number a user sees.

    ``source`` names it in errors (a file, or a file and a split). Shared by the file formats
    here and by ``autocompress.hf_data`` (``datasets`` splits).
    """
    check_columns([str(c) for c in frame.columns], source, text_column, label_column, pair_column)
    if frame.empty:
        raise DataError(f"{source}: no rows")
    texts, labels = frame[text_column], frame[label_column]
    pairs = frame[pair_column] if pair_column is not None else None
    missing = texts.isna()
    for column in [texts, labels] + ([pairs] if pairs is not None else []):
        missing |= column.isna() | (column.astype(str).str.strip() == "")
    what = "an empty text, second text or label" if pairs is not None else "an empty text or label"
    if missing.any():
        rows = [int(i) for i in frame.index[missing.to_numpy()]]
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        if not drop_missing:
            which = "1 row has" if len(rows) == 1 else f"{len(rows)} rows have"
            raise DataError(f"{source}: {which} {what} (row{'s' * (len(rows) > 1)} {shown}); "
                            "fix them or pass --drop-missing")
        texts, labels = texts[~missing], labels[~missing]
        pairs = pairs[~missing] if pairs is not None else None
        if texts.empty:
            raise DataError(f"{source}: every row has {what}")
    return [str(t) for t in texts], list(labels), None if pairs is None else [str(t) for t in pairs]


def label_key(value: object) -> object:
    """A sortable key for one raw label; numeric strings (as CSV gives them) become ints.

    Raises ``ValueError`` for a value that is no class (a fractional number).
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)  # stays a bool so the label names read "False"/"True"; sorts as 0/1
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer():
        return int(number)
    raise ValueError(value)


def encode_labels(raw_labels: Sequence[object], source: str) -> tuple[list[int], list[str]]:
    """Map distinct label values to 0..K-1 in sorted order (numbers numerically, strings lexically)."""
    if any(isinstance(value, (list, tuple)) for value in raw_labels):
        raise DataError(f"{source}: labels are lists (a tag per token?); token classification needs a fine-tuned "
                        "token classifier (a *ForTokenClassification checkpoint) as --model")
    keys = []
    for value in raw_labels:
        try:
            keys.append(label_key(value))
        except ValueError:
            raise DataError(f"{source}: label {value!r} is not a class: labels must be whole numbers or "
                            "names (for a score, bin it into classes first)") from None
    distinct = set(keys)
    if len(distinct) < 2:
        only = next(iter(distinct), None)
        raise DataError(f"{source}: only one class ({only!r}): a classifier needs at least 2")
    if any(isinstance(k, str) for k in distinct) and any(isinstance(k, int) for k in distinct):
        ordered = sorted(distinct, key=str)
    else:
        ordered = sorted(distinct)
    index = {k: i for i, k in enumerate(ordered)}
    return [index[k] for k in keys], [str(k) for k in ordered]


def stratified_split(texts: Sequence[str], labels: Sequence[int], label_names: Sequence[str],
                     fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                     pairs: Sequence[str] | None = None) -> TaskData:
    """Per-class seeded shuffle and cut: every split gets every class; deterministic for a seed.

    Validation and test take their fractions of each class (at least one example each); train
    takes the rest. ``pairs``: the second text of each example, for a sentence-pair task.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    everything = TextDataset(list(texts), [int(label) for label in labels], None if pairs is None else list(pairs))
    if any(not 0 <= label < len(label_names) for label in labels):
        raise ValueError(f"labels must be indices 0..{len(label_names) - 1} into label_names")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    labels_array = np.asarray(labels)
    for cls in range(len(label_names)):
        members = np.flatnonzero(labels_array == cls)
        if len(members) < 3:
            raise DataError(f"class '{label_names[cls]}' has {len(members)} example(s); each class needs at "
                            "least 3 (one per train/validation/test split)")
        members = rng.permutation(members)
        n_val = max(1, round(len(members) * fractions[1]))
        n_test = max(1, round(len(members) * fractions[2]))
        n_train = len(members) - n_val - n_test
        parts[0] += members[:n_train].tolist()
        parts[1] += members[n_train:n_train + n_val].tolist()
        parts[2] += members[n_train + n_val:].tolist()
    splits = []
    for part in parts:
        order = rng.permutation(np.asarray(sorted(part)))  # mix classes within a split
        splits.append(everything.subset(order))
    return TaskData(*splits, label_names=list(label_names))


def score_values(raw: Sequence[object], source: str) -> list[float]:
    """Regression labels: every one a finite number (CSV gives strings), or a DataError naming the values."""
    scores, bad = [], []
    for value in raw:
        try:
            number = float(str(value).strip()) if not isinstance(value, (int, float, np.number)) else float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            bad.append(f"{value!r}")
        scores.append(number)
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise DataError(f"{source}: a regression model needs a number as every label; {len(bad)} are not ({shown})")
    if len(set(scores)) < 2:
        raise DataError(f"{source}: every label is {scores[0]!r}; a regression task needs scores that vary")
    return scores


def random_split(texts: Sequence[str], scores: Sequence[float], label_name: str,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                 pairs: Sequence[str] | None = None) -> TaskData:
    """A regression task's seeded shuffle and cut (no classes to stratify by): train / validation / test."""
    if len(texts) < 3:
        raise DataError(f"{len(texts)} example(s); a task needs at least 3 (one per train/validation/test split)")
    everything = TextDataset(list(texts), [float(score) for score in scores], None if pairs is None else list(pairs))
    order = np.random.default_rng(seed).permutation(len(texts)).tolist()
    n_val = max(1, round(len(texts) * fractions[1]))
    n_test = max(1, round(len(texts) * fractions[2]))
    n_train = len(texts) - n_val - n_test
    cuts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
    return TaskData(*(everything.subset(part) for part in cuts), label_names=[label_name])


def hold_out(split: TextDataset, label_names: Sequence[str], fraction: float, seed: int,
             source: str) -> tuple[TextDataset, TextDataset]:
    """Carve a stratified, seeded ``fraction`` out of ``split``: (the rest, the held-out part).

    Every class present keeps at least one example on each side, so it needs at least two.
    """
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(split.labels)
    kept: list[int] = []
    held: list[int] = []
    for cls in sorted(set(split.labels)):
        members = rng.permutation(np.flatnonzero(labels_array == cls))
        if len(members) < 2:
            raise DataError(f"{source}: class '{label_names[cls]}' has 1 example; at least 2 are needed to "
                            "hold one out")
        n_held = min(len(members) - 1, max(1, round(len(members) * fraction)))
        held += members[:n_held].tolist()
        kept += members[n_held:].tolist()
    parts = []
    for part in (kept, held):
        order = rng.permutation(np.asarray(sorted(part)))
        parts.append(split.subset(order))
    return parts[0], parts[1]


def load_task_data(path: str | Path, text_column: str = "text", label_column: str = "label", seed: int = 0,
                   drop_missing: bool = False, pair_column: str | None = None, regression: bool = False) -> TaskData:
    """A data file read, its labels encoded and split 0.8/0.1/0.1 by class (``read_table`` and friends).

    A directory is a dataset written by ``datasets``' ``save_to_disk``: its own splits are used
    (``autocompress.hf_data``). ``pair_column``: the column of the second texts of a sentence-pair task.
    ``regression``: the labels are scores (``score_values``), split at random (``random_split``).
    """
    if regression:
        if Path(path).is_dir():
            raise DataError(f"{path}: a regression task reads a data file (CSV, TSV, JSON lines, Parquet); scores "
                            "from a saved datasets directory are not supported yet")
        texts, raw, pairs = read_table(path, text_column, label_column, drop_missing, pair_column)
        try:
            return random_split(texts, score_values(raw, str(path)), label_column, seed=seed, pairs=pairs)
        except DataError as exc:
            message = str(exc)
            raise DataError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    if Path(path).is_dir():
        from autocompress.hf_data import load_saved_dataset

        return load_saved_dataset(Path(path), text_column, label_column, seed=seed, drop_missing=drop_missing,
                                  pair_column=pair_column)
    texts, raw, pairs = read_table(path, text_column, label_column, drop_missing, pair_column)
    labels, names = encode_labels(raw, str(path))
    try:
        return stratified_split(texts, labels, names, seed=seed, pairs=pairs)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
