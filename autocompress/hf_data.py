"""Hugging Face ``datasets`` as task data: directories written by ``save_to_disk``, and objects.

A ``DatasetDict`` brings its own splits: ``train`` (required), ``validation`` (or ``valid``,
``val``, ``dev``) and ``test`` are used as they are. A missing validation split is carved from
train (stratified, seeded, never from test); a missing test split likewise; a lone ``Dataset``
(or a dict holding only train) is split 80/10/10 like a data file. A ``ClassLabel`` label
column keeps its own ids and names; other labels are encoded from the train split, and a label
in another split that train never has is an error naming both.

Objects handed to ``autocompress.compress(data=...)`` (``Dataset``, ``DatasetDict``, or a pandas
DataFrame) are first written to the cache by content hash, so a search reads a path like the
command line does (resumable, and readable by ``--isolate``'s child processes).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autocompress.data import (
    TaskData,
    TextDataset,
    check_columns,
    column_values,
    encode_labels,
    hold_out,
    label_key,
    stratified_split,
)
from autocompress.errors import DataError, InputError
from autocompress.hashing import directory_sha256, file_sha256

VALIDATION_NAMES = ("validation", "valid", "val", "dev")
#: Share of the train split held out when the dataset has no validation (or no test) split:
#: one ninth of 90% is 10% of the whole, as for a split data file.
HOLD_OUT = 1 / 9
INSTALL_HINT = "pip install 'autocompress[datasets]' (or pip install datasets)"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise InputError(f"Hugging Face datasets are read with the datasets package: {INSTALL_HINT}") from None
    return datasets


@contextlib.contextmanager
def _quiet(datasets) -> Iterator[None]:
    """No per-shard progress bars while reading or writing (the search has its own)."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def is_saved_dataset(path: Path) -> bool:
    """A directory ``save_to_disk`` wrote: a DatasetDict's ``dataset_dict.json`` or a Dataset's ``state.json``."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load_saved_dataset(path: Path, text_column: str = "text", label_column: str = "label", seed: int = 0,
                       drop_missing: bool = False, pair_column: str | None = None) -> TaskData:
    """The task data in a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return task_data_from_datasets(read_saved_dataset(path), str(path), text_column, label_column, seed=seed,
                                   drop_missing=drop_missing, pair_column=pair_column)


def read_saved_dataset(path: Path) -> Any:
    """The ``Dataset`` or ``DatasetDict`` in a directory written by ``save_to_disk``; a DataError naming
    ``path`` when it is no such directory, has an empty split or cannot be read."""
    if not is_saved_dataset(path):
        raise DataError(f"{path}: a directory, but not one written by datasets' save_to_disk (no dataset_dict.json "
                        "or state.json); --data takes a data file (CSV, TSV, JSONL, Parquet) or such a directory")
    _check_saved_splits(path)
    datasets = _datasets()
    try:
        with _quiet(datasets):
            loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # corrupt arrow files, version mismatches: datasets raises many kinds
        raise DataError(f"{path}: cannot read the saved dataset ({type(exc).__name__}: {exc})") from None
    return loaded


def _check_saved_splits(path: Path) -> None:
    """An empty split saves as zero data files, which ``load_from_disk`` cannot read back: name it first."""
    listing = path / "dataset_dict.json"
    names = json.loads(listing.read_text()).get("splits", []) if listing.is_file() else [None]
    for name in names:
        state = (path / name if name else path) / "state.json"
        if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
            raise DataError(f"{path}: split '{name or 'train'}': the split is empty")


def dataset_splits(obj: Any, source: str) -> dict[str, Any]:
    """The dataset's train/validation/test splits by their canonical names."""
    datasets = _datasets()
    if isinstance(obj, datasets.Dataset):
        return {"train": obj}
    if not isinstance(obj, datasets.DatasetDict):
        raise DataError(f"{source}: expected a datasets.Dataset or DatasetDict, got {type(obj).__name__}")
    names = list(obj)
    if "train" not in obj:
        raise DataError(f"{source}: no 'train' split (splits: {', '.join(names) or 'none'}); name the training "
                        "split 'train'")
    splits = {"train": obj["train"]}
    validation = next((n for n in VALIDATION_NAMES if n in obj), None)
    if validation is not None:
        splits["validation"] = obj[validation]
    if "test" in obj:
        splits["test"] = obj["test"]
    return splits


def _split_values(split: Any, where: str, text_column: str, label_column: str, drop_missing: bool,
                  pair_column: str | None = None) -> tuple[list[str], list[object], list[str] | None]:
    wanted = check_columns(list(split.column_names), where, text_column, label_column, pair_column)
    if len(split) == 0:
        raise DataError(f"{where}: the split is empty")
    frame = split.select_columns(wanted).to_pandas()
    return column_values(frame, where, text_column, label_column, drop_missing, pair_column)


def _class_label_names(splits: dict[str, Any], label_column: str, source: str) -> list[str] | None:
    """The ``ClassLabel`` names of the label column, or None when it is not a ClassLabel; every split must agree."""
    datasets = _datasets()
    found = {name: split.features.get(label_column) for name, split in splits.items()}
    kinds = {name: isinstance(feature, datasets.ClassLabel) for name, feature in found.items()}
    if not any(kinds.values()):
        return None
    def spelled(name: str) -> str:
        return f"ClassLabel {found[name].names}" if kinds[name] else "no ClassLabel"

    for split_name in found:
        if kinds[split_name] != kinds["train"] or (kinds["train"] and found[split_name].names != found["train"].names):
            raise DataError(f"{source}: the label column '{label_column}' differs between splits: split 'train' has "
                            f"{spelled('train')}, split '{split_name}' has {spelled(split_name)}")
    return list(found["train"].names)


def _encode(raw: dict[str, list[object]], class_names: list[str] | None, source: str
            ) -> tuple[dict[str, list[int]], list[str]]:
    """Label ids per split: ClassLabel ids as they are, other labels encoded from the train split."""
    if class_names is not None:
        encoded = {}
        for split_name, labels in raw.items():
            bad = sorted({int(v) for v in labels if not 0 <= int(v) < len(class_names)})
            if bad:
                shown = ", ".join(map(str, bad))
                raise DataError(f"{source}: split '{split_name}' has label id(s) {shown} outside its "
                                f"ClassLabel names {class_names} (-1 marks an unlabelled example, as in GLUE test "
                                "splits: use a labelled split)")
            encoded[split_name] = [int(v) for v in labels]
        if len(set(encoded["train"])) < 2:
            raise DataError(f"{source}: split 'train' has only one class: a classifier needs at least 2")
        return encoded, class_names
    train_ids, names = encode_labels(raw["train"], f"{source}: split 'train'")
    index = {label_key(value): i for value, i in zip(raw["train"], train_ids, strict=True)}
    encoded = {"train": train_ids}
    for split_name, labels in raw.items():
        if split_name == "train":
            continue
        ids = []
        for value in labels:
            try:
                key = label_key(value)
            except ValueError:
                key = None
            if key not in index:
                raise DataError(f"{source}: split '{split_name}' has label {value!r}, which split 'train' never has "
                                f"(train's labels: {', '.join(names)})")
            ids.append(index[key])
        encoded[split_name] = ids
    return encoded, names


def task_data_from_datasets(obj: Any, source: str, text_column: str = "text", label_column: str = "label",
                            seed: int = 0, drop_missing: bool = False, pair_column: str | None = None) -> TaskData:
    """Task data from a ``datasets.Dataset`` or ``DatasetDict`` (see the module docstring for the splits);
    ``pair_column``: the column of the second texts of a sentence-pair task."""
    splits = dataset_splits(obj, source)
    texts, raw, pairs = {}, {}, {}
    for split_name, split in splits.items():
        texts[split_name], raw[split_name], pairs[split_name] = _split_values(
            split, f"{source}: split '{split_name}'", text_column, label_column, drop_missing, pair_column)
    labels, names = _encode(raw, _class_label_names(splits, label_column, source), source)
    if set(splits) == {"train"}:
        try:
            return stratified_split(texts["train"], labels["train"], names, seed=seed, pairs=pairs["train"])
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None
    train = TextDataset(texts["train"], labels["train"], pairs["train"])
    parts = {name: TextDataset(texts[name], labels[name], pairs[name]) for name in splits if name != "train"}
    for missing in ("validation", "test"):
        if missing not in parts:  # carved from train only: test never feeds validation, nor the reverse
            train, parts[missing] = hold_out(train, names, HOLD_OUT, seed, f"{source}: split 'train'")
    return TaskData(train, parts["validation"], parts["test"], label_names=names)


def save_for_search(data: Any, cache_dir: Path) -> Path:
    """Write an in-memory ``Dataset``/``DatasetDict`` or pandas DataFrame to ``cache_dir/data/<content hash>``.

    Returns the path a search reads (a Parquet file for a DataFrame, a saved dataset directory
    otherwise). The same content maps to the same path, so re-running resumes the same study.
    """
    import pandas as pd

    folder = cache_dir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, pd.DataFrame):
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".parquet", delete=False) as handle:
            staging = Path(handle.name)
        try:
            data.to_parquet(staging, index=False)
            target = folder / f"{file_sha256(staging)[:16]}.parquet"
            staging.replace(target)
        finally:
            staging.unlink(missing_ok=True)
        return target
    datasets = _datasets()
    if not isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        raise InputError(f"data=: expected a path, a datasets.Dataset or DatasetDict, or a pandas DataFrame; "
                         f"got {type(data).__name__}")
    for name, split in dataset_splits(data, "data=").items():
        if len(split) == 0:
            raise DataError(f"data=: split '{name}': the split is empty")
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".dataset-"))
    try:
        with _quiet(datasets):
            data.save_to_disk(str(staging / "saved"))
        # state.json holds bookkeeping (fingerprints of past transforms), not content.
        content = directory_sha256(staging / "saved", exclude=("state.json",))
        target = folder / content[:16]
        if not target.exists():
            (staging / "saved").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
