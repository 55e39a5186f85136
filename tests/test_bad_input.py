"""Bad input through the real command line: each case is refused in seconds, before any training,
with exit code 2 and one message naming the file, field or value at fault and what would be valid.

``python tests/test_bad_input.py`` runs every case and prints them as a Markdown table
(input | message | exit code).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.testing import synthetic_sentiment, write_tiny_task

EXIT_BAD_INPUT = 2
#: A case may take at most this many times what a good input takes to reach the teacher's
#: measurement (loading the tiny teacher and the data is the most any case may do), measured on
#: the same machine in the same session: no seconds that a busy machine could exceed.
REFERENCE_MULTIPLE = 5.0


class ReachedTraining(AssertionError):
    """Raised if a case got as far as measuring the teacher: validation came too late."""


def build_fixtures(root: Path) -> Path:
    """A tiny fine-tuned checkpoint and a good data file: each case breaks one thing."""
    write_tiny_task(root, 60)
    return root


# Helpers that write one broken input into the scratch folder and return its path.


def _model_copy(fx: Path, scratch: Path, edit: Callable[[Path], None]) -> Path:
    model = scratch / "model"
    shutil.copytree(fx / "model", model)
    edit(model)
    return model


def _set_architectures(model: Path, names: list[str], model_type: str | None = None) -> None:
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = names
    if model_type is not None:
        config["model_type"] = model_type
    (model / "config.json").write_text(json.dumps(config))


def _pickle_only(model: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _file(scratch: Path, name: str, content: str | bytes) -> Path:
    path = scratch / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _csv(scratch: Path, texts: list, labels: list, name: str = "bad.csv", text_column: str = "text") -> Path:
    path = scratch / name
    pd.DataFrame({text_column: texts, "label": labels}).to_csv(path, index=False)
    return path


def _good(n: int = 40) -> tuple[list[str], list[str]]:
    return synthetic_sentiment(n)


def _saved_dataset(scratch: Path, text_column: str = "text") -> Path:
    """A DatasetDict with train/validation/test splits written by ``save_to_disk``."""
    import datasets

    texts, labels = _good(60)
    splits = {"train": (0, 40), "validation": (40, 50), "test": (50, 60)}
    saved = datasets.DatasetDict({name: datasets.Dataset.from_dict({text_column: texts[a:b], "label": labels[a:b]})
                                  for name, (a, b) in splits.items()})
    saved.save_to_disk(str(scratch / "saved"))
    return scratch / "saved"


def _run_json(scratch: Path, **record) -> Path:
    out = scratch / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps(record))
    return out


@dataclass(frozen=True)
class Case:
    #: What is wrong, as the table shows it.
    input: str
    #: (fixtures, scratch) -> command-line arguments added after the good defaults (later ones win).
    args: Callable[[Path, Path], list[str]]
    #: Fragments the message must contain: the culprit and what would be valid.
    expect: tuple[str, ...]
    code: int = EXIT_BAD_INPUT


def _space(text: str) -> Callable[[Path, Path], list[str]]:
    return lambda fx, s: ["--search-space", str(_file(s, "space.yaml", text))]


def _config(text: str) -> Callable[[Path, Path], list[str]]:
    return lambda fx, s: ["--config", str(_file(s, "run.yaml", text))]


def _data(make: Callable[[Path], Path]) -> Callable[[Path, Path], list[str]]:
    return lambda fx, s: ["--data", str(make(s))]


def _model(edit: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    return lambda fx, s: ["--model", str(_model_copy(fx, s, edit))]


def _option(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda fx, s: list(args)


CASES = [
    # The model.
    Case("--model: the directory does not exist", lambda fx, s: ["--model", str(s / "no-such-model")],
         ("no-such-model", "directory not found")),
    Case("--model: a file, not a directory", lambda fx, s: ["--model", str(fx / "data.csv")],
         ("data.csv", "not a directory", "Hugging Face checkpoint folder")),
    Case("--model: a folder that is not a checkpoint (no config.json)",
         lambda fx, s: ["--model", str((s / "empty").mkdir() or s / "empty")],
         ("empty", "no config.json", "not a Hugging Face checkpoint")),
    Case("--model: config.json is not JSON", _model(lambda m: _file(m, "config.json", "{not json")),
         ("config.json", "not valid JSON", "Hugging Face config.json")),
    Case("--model: a base model of a kind transformers has no classification head for (an image encoder)",
         _model(lambda m: _set_architectures(m, ["ViTModel"], model_type="vit")),
         ("config.json", "ViTModel", "not a sequence classifier", "no sequence-classification head for "
          "model_type 'vit'", "BertModel", "BertForSequenceClassification")),
    Case("--model: no weights file", _model(lambda m: (m / "model.safetensors").unlink()),
         ("no weights file", "model.safetensors")),
    Case("--model: truncated model.safetensors", _model(lambda m: _truncate(m / "model.safetensors")),
         ("model", "cannot load the checkpoint", "model.safetensors")),
    Case("--model: pickle-only weights (pytorch_model.bin), no --allow-pickle", _model(_pickle_only),
         ("pickle format (pytorch_model.bin)", "arbitrary code", "--allow-pickle", "safetensors")),
    Case("--model has 2 labels, --data has 3 classes",
         _data(lambda s: _csv(s, _good(60)[0], [i % 3 for i in range(60)])),
         ("has 2 labels", "bad.csv has 3 classes (0, 1, 2)")),
    # The data file.
    Case("--data: the file does not exist", lambda fx, s: ["--data", str(s / "missing.csv")],
         ("missing.csv", "data file not found")),
    Case("--data: an empty file", _data(lambda s: _file(s, "empty.csv", "")), ("empty.csv", "the file is empty")),
    Case("--data: a header and no rows", _data(lambda s: _file(s, "header.csv", "text,label\n")),
         ("header.csv", "no rows")),
    Case("--data: unsupported extension (.xlsx)", _data(lambda s: _file(s, "reviews.xlsx", b"PK\x03\x04")),
         ("reviews.xlsx", "unsupported file type '.xlsx'", "supported: .csv, .jsonl, .ndjson, .parquet, .tsv")),
    Case("--data: a .jsonl file holding CSV", _data(lambda s: _file(s, "rows.jsonl", "text,label\nfine,pos\n")),
         ("rows.jsonl", "line 1 is not valid JSON", "one object per line")),
    Case("--data: a .parquet file that is not Parquet", _data(lambda s: _file(s, "rows.parquet", "text,label\n")),
         ("rows.parquet", "not a readable Parquet file")),
    Case("--data: a CSV row with more fields than the header",
         _data(lambda s: _file(s, "ragged.csv", "text,label\ngood, fun film,pos\n")),
         ("ragged.csv", "more fields than the header", "quote texts")),
    Case("--data: no 'text' column (it is called 'sentence')",
         _data(lambda s: _csv(s, *_good(), text_column="sentence")),
         ("bad.csv", "column 'text' not found (columns: sentence, label)", "set --text-column")),
    Case("--label-column stars: no such column", _option("--label-column", "stars"),
         ("data.csv", "column 'stars' not found (columns: text, label)", "set --label-column")),
    Case("--data: a single class", _data(lambda s: _csv(s, _good()[0], ["pos"] * 40)),
         ("bad.csv", "only one class ('pos')", "at least 2")),
    Case("--data: labels that are scores, not classes", _data(lambda s: _csv(s, _good(4)[0], [0.5, 1, 0, 2.25])),
         ("bad.csv", "label", "0.5", "is not a class", "whole numbers or names")),
    Case("--data: Latin-1 bytes, not UTF-8",
         _data(lambda s: _file(s, "latin1.csv", "text,label\ncaf\u00e9 fine,pos\n".encode("latin-1"))),
         ("latin1.csv", "not UTF-8", "0xe9", "line 2", "re-save the file as UTF-8")),
    Case("--data: 2 rows with an empty text or label (NaN), no --drop-missing",
         _data(lambda s: _csv(s, [*_good()[0][:38], "", "fine film"], [*_good()[1][:38], "neg", None])),
         ("bad.csv", "2 rows have an empty text or label (rows 40, 41)", "--drop-missing")),
    Case("--data: a class with 2 examples (cannot fill 3 splits)",
         _data(lambda s: _csv(s, _good()[0][:22], [*["pos"] * 20, "neg", "neg"])),
         ("bad.csv", "class 'neg' has 2 example(s)", "at least 3")),
    Case("--model: a Hugging Face Hub id that is not in the local cache",
         lambda fx, s: ["--model", "tiny-org/never-downloaded"],
         ("--model tiny-org/never-downloaded", "not in the local cache", "hf download tiny-org/never-downloaded")),
    Case("--data: a saved datasets directory without the text column",
         _data(lambda s: _saved_dataset(s, text_column="sentence")),
         ("split 'train': column 'text' not found (columns: sentence, label)", "set --text-column")),
    Case("--unlabeled: the file does not exist", lambda fx, s: ["--unlabeled", str(s / "more.txt")],
         ("more.txt", "unlabeled-text file not found")),
    Case("--unlabeled: a text file with only blank lines",
         lambda fx, s: ["--unlabeled", str(_file(s, "blank.txt", "\n  \n"))],
         ("blank.txt", "no text in the unlabeled-text file")),
    Case("--unlabeled: a CSV without the text column",
         lambda fx, s: ["--unlabeled", str(_file(s, "more.csv", "sentence\nfine film\n"))],
         ("more.csv", "column 'text' not found (columns: sentence)", "set --text-column")),
    # Techniques and search spaces.
    Case("--techniques pruning (no such technique)", _option("--techniques", "pruning"),
         ("unknown technique(s) pruning", "valid: distillation, ffn_pruning")),
    Case("--search-space: unknown technique", _space("prunning: {}\n"),
         ("space.yaml", "unknown technique 'prunning'", "valid: distillation, ffn_pruning")),
    Case("--search-space: unknown field", _space("ffn_pruning:\n  keep: {type: float, low: 0.2, high: 0.5}\n"),
         ("space.yaml", "unknown field 'keep' for technique 'ffn_pruning'", "fields: keep_fraction, multiple_of")),
    Case("--search-space: unknown key in a distribution",
         _space("ffn_pruning:\n  keep_fraction: {type: float, lo: 0.2, high: 0.5}\n"),
         ("space.yaml", "ffn_pruning.keep_fraction", "unknown key(s) lo", "valid: high, log, low, step, type")),
    Case("--search-space: wrong type (low is a word)",
         _space("ffn_pruning:\n  keep_fraction: {type: float, low: half, high: 0.9}\n"),
         ("space.yaml", "ffn_pruning.keep_fraction", "'low' must be a number, got 'half'")),
    Case("--search-space: unknown distribution type",
         _space("ffn_pruning:\n  keep_fraction: {type: uniform, low: 0.2, high: 0.9}\n"),
         ("space.yaml", "'type' must be one of float, int, categorical, got 'uniform'")),
    Case("--search-space: low > high", _space("ffn_pruning:\n  keep_fraction: {type: float, low: 0.9, high: 0.2}\n"),
         ("space.yaml", "ffn_pruning.keep_fraction", "low (0.9) is greater than high (0.2)")),
    Case("--search-space: a step that never reaches high",
         _space("ffn_pruning:\n  keep_fraction: {type: float, low: 0.3, high: 0.95, step: 0.1}\n"),
         ("space.yaml", "ffn_pruning.keep_fraction", "high (0.95) is not low (0.3) plus a whole number of steps (0.1)",
          "use high: 0.9 or 1.0")),
    Case("--search-space: empty choices", _space("quantization:\n  dtype: {type: categorical, choices: []}\n"),
         ("space.yaml", "quantization.dtype", "'choices' must be a non-empty list, got []")),
    Case("--search-space: a value the technique rejects (keep_fraction up to 1.5)",
         _space("ffn_pruning:\n  keep_fraction: {type: float, low: 0.5, high: 1.5}\n"),
         ("space.yaml", "ffn_pruning.keep_fraction", "1.5", "keep_fraction must be in (0, 1]")),
    Case("--search-space: a choice of the wrong kind", _space("quantization:\n  dtype: {type: categorical, "
                                                              "choices: [int8, int2]}\n"),
         ("space.yaml", "quantization.dtype", "'int2'", "dtype must be one of")),
    Case("--search-space: not a mapping (a list)", _space("- ffn_pruning\n- quantization\n"),
         ("space.yaml", "expected a mapping of technique names to fields")),
    Case("--search-space: not YAML", _space("ffn_pruning: {keep_fraction: [\n"),
         ("space.yaml", "not valid YAML at line 2, column 1")),
    Case("--search-space: the file does not exist", lambda fx, s: ["--search-space", str(s / "nope.yaml")],
         ("nope.yaml", "file not found")),
    # Limits and budgets.
    Case("--max-latency-ms -3 (negative)", _option("--max-latency-ms", "-3"),
         ("--max-latency-ms must be greater than 0, got -3",)),
    Case("--max-memory-mb 0 (zero)", _option("--max-memory-mb", "0"), ("--max-memory-mb must be greater than 0",)),
    Case("--max-latency-ms fast (not a number)", _option("--max-latency-ms", "fast"),
         ("argument --max-latency-ms: invalid float value: 'fast'",)),
    Case("--max-accuracy-drop 1.5 (not a fraction)", _option("--max-accuracy-drop", "1.5"),
         ("--max-accuracy-drop must be a fraction in [0, 1) (0.01 = 1 point), got 1.5",)),
    Case("--metric f2 (no such metric)", _option("--metric", "f2"),
         ("--metric 'f2': unknown metric (valid: accuracy (", "f1 (")),
    Case("--trials 0", _option("--trials", "0"), ("--trials must be a whole number >= 1, got 0",)),
    Case("--trials ten (not a number)", _option("--trials", "ten"), ("argument --trials: invalid int value: 'ten'",)),
    Case("--timeout nan", _option("--timeout", "nan"), ("--timeout must be a number, got nan",)),
    Case("--trial-timeout -1", _option("--trial-timeout", "-1"), ("--trial-timeout must be greater than 0, got -1",)),
    Case("--trial-memory-mb 0", _option("--trial-memory-mb", "0"),
         ("--trial-memory-mb must be greater than 0, got 0",)),
    Case("--batch-size 0", _option("--batch-size", "0"), ("batch_size must be >= 1",)),
    Case("--sampler grid (unknown)", _option("--sampler", "grid"), ("--sampler must be one of tpe, nsga2, random",)),
    # Storage and run directory.
    Case("--storage: PostgreSQL on a closed port", _option("--storage", "postgresql://autocompress@127.0.0.1:9/none"),
         ("--storage 'postgresql://autocompress@127.0.0.1:9/none'", "Connection refused",
          "expected a reachable database URL")),
    Case("--storage: not a URL", _option("--storage", "study.db"),
         ("--storage 'study.db' is not a database URL", "sqlite:///study.db")),
    Case("--storage: unknown database kind", _option("--storage", "nosuchdb://host/x"),
         ("--storage 'nosuchdb://host/x'", "nosuchdb", "expected a reachable database URL")),
    Case("--out holds a different study",
         lambda fx, s: ["--out", str(_run_json(s, study="other-search"))],
         ("holds study 'other-search', not 'local-search'", "choose another --out or the same --study")),
    Case("--out holds a search of a different model/data",
         lambda fx, s: ["--out", str(_run_json(s, study="local-search", task_fingerprint="0123456789ab-cdef"))],
         ("holds a search of a different model/data", "0123456789ab-cdef", "choose another --out")),
    # The --config file.
    Case("--config: unknown option", _config("max_latencyms: 3\n"),
         ("run.yaml", "unknown option 'max_latencyms'", "did you mean 'max_latency_ms'?", "valid: task, model")),
    Case("--config: wrong type", _config("trials: many\n"),
         ("run.yaml", "'trials' must be a whole number, got 'many'")),
    Case("--config: not a mapping", _config("- trials\n"), ("run.yaml", "expected a mapping of options, got list")),
    Case("--config: the file does not exist", lambda fx, s: ["--config", str(s / "absent.yaml")],
         ("absent.yaml", "file not found")),
]


@dataclass
class Outcome:
    code: int
    message: str
    seconds: float


def run_case(case: Case, fixtures: Path, scratch: Path) -> Outcome:
    """Run one case through ``autocompress.cli.main``; teacher measurement (the first expensive step)
    raises ReachedTraining, so a check that comes too late fails loudly."""
    argv = ["search", "--model", str(fixtures / "model"), "--data", str(fixtures / "data.csv"),
            "--out", str(scratch / "run"), "--no-progress", "--techniques", "ffn_pruning,quantization",
            *case.args(fixtures, scratch)]
    stderr = io.StringIO()

    def too_late(*args, **kwargs):
        raise ReachedTraining(f"{case.input}: reached the teacher measurement")

    started = time.perf_counter()
    with mock.patch("autocompress.search.run.measure_baseline", too_late), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refuses values of the wrong type itself (exit code 2)
            code = exc.code
    return Outcome(code, stderr.getvalue().strip(), time.perf_counter() - started)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return build_fixtures(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture(scope="module")
def reference_seconds(fixtures, tmp_path_factory) -> float:
    """How long good input takes to get as far as the teacher's measurement (the longest of two runs,
    the first of which also pays for imports)."""
    good = Case("good input", lambda fx, s: [], ())
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        with pytest.raises(ReachedTraining):
            run_case(good, fixtures, tmp_path_factory.mktemp("good"))
        seconds.append(time.perf_counter() - started)
    return max(seconds)


def test_there_are_enough_distinct_cases():
    assert len(CASES) >= 24 and len({case.input for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.input for case in CASES])
def test_bad_input_is_refused_fast_with_a_clear_message(case, fixtures, reference_seconds, tmp_path):
    outcome = run_case(case, fixtures, tmp_path)
    assert outcome.code == case.code, outcome.message
    for fragment in case.expect:
        assert fragment in outcome.message, f"{fragment!r} not in {outcome.message!r}"
    assert "Traceback" not in outcome.message
    # Before the teacher's measurement (run_case fails otherwise), and not slower than getting there.
    assert outcome.seconds <= REFERENCE_MULTIPLE * reference_seconds, (outcome.seconds, reference_seconds)
    out = tmp_path / "run"
    assert not (out / "candidates").exists() and not (out / "trials.csv").exists()


def test_rows_with_missing_values_are_dropped_only_with_drop_missing(fixtures, tmp_path):
    texts, labels = _good()
    data = _csv(tmp_path, [*texts[:38], "", "fine film"], [*labels[:38], "neg", None])
    # With --drop-missing the data passes; the next check (a bad storage URL) is what stops the run.
    case = Case("drop", lambda fx, s: ["--data", str(data), "--drop-missing", "--storage", "study.db"], ())
    outcome = run_case(case, fixtures, tmp_path)
    assert outcome.code == 2 and "is not a database URL" in outcome.message

    from autocompress.data import read_table

    kept, _, _ = read_table(data, drop_missing=True)
    assert len(kept) == 38


def _markdown_table(fixtures: Path) -> str:
    lines = ["| input | message | exit code |", "|---|---|---|"]
    for case in CASES:
        with tempfile.TemporaryDirectory() as scratch:
            outcome = run_case(case, fixtures, Path(scratch))
            printed = outcome.message.splitlines()  # argparse prints its usage first, then the error
            start = next((i for i, line in enumerate(printed) if "error:" in line), 0)
            message = " ".join(" ".join(printed[start:]).split())
            message = message.replace(scratch, "<tmp>").replace(str(fixtures), "<fixtures>")
        lines.append(f"| {case.input} | `{message.replace('|', '/')}` | {outcome.code} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as root:
        print(_markdown_table(build_fixtures(Path(root))))
    sys.exit(0)


def test_a_storage_password_never_reaches_the_message_and_no_run_directory_is_left(fixtures, tmp_path):
    url = "postgresql://autocompress:s3cret-pw@127.0.0.1:9/none"
    case = Case("password", lambda fx, s: ["--storage", url], ())
    outcome = run_case(case, fixtures, tmp_path)
    assert outcome.code == 2 and "Connection refused" in outcome.message
    assert "s3cret-pw" not in outcome.message and "autocompress:***@127.0.0.1:9" in outcome.message
    assert not (tmp_path / "run").exists()
