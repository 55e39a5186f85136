"""Run options from a YAML config file and the command line, validated into SearchSettings.

Every option has one name (``max_latency_ms`` in YAML, ``--max-latency-ms`` on the command
line); command-line values override the file. Unknown keys and wrong types are errors naming
the file and the key.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autocompress.errors import InputError


class PathOrHubId(str):
    """A model reference kept as spelled: a local directory, or a Hugging Face Hub id (``org/name``)
    resolved from the local cache (``autocompress.hub``). A relative directory in a config file is
    relative to that file when it exists there; anything else stays as written, so Hub ids survive."""


# option -> (python type, help). Lists are comma-separated on the command line.
OPTIONS: dict[str, tuple[type, str]] = {
    "task": (str, "task provider (default: demo, or local when --model/--data are given)"),
    "model": (PathOrHubId, "your model: a checkpoint directory or a Hugging Face Hub id from the local cache; a "
              "sequence classifier is the teacher, a base model (e.g. BertModel) is fine-tuned on --data first"),
    "data": (Path, "your labelled data: a CSV, TSV, JSONL or Parquet file with text and label columns, or a "
             "directory written by datasets' save_to_disk (its train/validation/test splits are used)"),
    "unlabeled": (Path, "in-domain texts without labels that distillation also learns from (the teacher labels "
                  "them): a .txt file with one text per line, or a CSV/TSV/JSONL/Parquet file with the text column"),
    "text_column": (str, "name of the text column (default: text)"),
    "text_pair_column": (str, "sentence-pair data (NLI, duplicate questions, reranking): the column of the second "
                         "text; each example is encoded as the pair (text, second text)"),
    "prompt_template": (str, "a causal LM --model classifies by the label word it would say next after this "
                        "prompt; {text} marks the text (default: 'Review: {text}\\nSentiment:')"),
    "label_words": (list, "comma-separated word per class, in label order, for a causal LM --model (default: "
                    "the label names)"),
    "label_column": (str, "name of the label column (default: label)"),
    "drop_missing": (bool, "drop rows with an empty text or label instead of failing"),
    "metric": (str, "what the search optimises and --max-accuracy-drop limits, for classification: accuracy "
               "(default) or f1 (two classes: F1 of the second label in sorted order, e.g. pos or 1; more: macro F1)"),
    "target": (str, "measurement target (default: cpu)"),
    "max_latency_ms": (float, "limit: median latency in ms"),
    "max_memory_mb": (float, "limit: memory in MB (weights + inference working memory)"),
    "max_accuracy_drop": (float, "limit: accuracy drop vs the teacher as a fraction (default 0.01 = 1 point)"),
    "max_perplexity_increase": (float, "limit for a language model (--task lm): perplexity increase vs the teacher "
                                "as a fraction (0.1 = at most 10% higher; default: a log-likelihood drop of 0.01 "
                                "per token, about 1%)"),
    "trials": (int, "trial budget of the study, starting points included (default: the task's: 20, demo-llm 6); "
               "re-running continues up to it"),
    "timeout": (float, "wall-time budget in seconds for this run"),
    "budget": (str, "trials and/or wall time in one option: 40, 90m, 2h, or 40,2h (instead of --trials/--timeout)"),
    "seed": (int, "random seed for splits, sampler and training (default: 0)"),
    "sampler": (str, "tpe (default, multi-objective, constraint-aware), nsga2 or random"),
    "pruner": (str, "stop weak recovery trials early: median (default), successive-halving, hyperband or none"),
    "prefer": (str, "which feasible model to recommend: latency (default), memory or accuracy"),
    "techniques": (list, "comma-separated techniques to search (default: all registered)"),
    "search_space": (Path, "YAML file overriding search spaces: {technique: {field: distribution}}"),
    "starting_points": (str, "YAML list of plans a new study tries first (default: the built-in "
                        "search_spaces/_starting_points.yaml; 'none': the sampler chooses from the first trial)"),
    "out": (Path, "run directory (default: runs/<study>)"),
    "storage": (str, "Optuna storage URL (default: sqlite file in the run directory)"),
    "study": (str, "study name (default: <task>-search)"),
    "batch_size": (int, "latency measurement batch size (default: 1)"),
    "seq_len": (int, "latency measurement sequence length (default: 64)"),
    "latency": (str, "what latency (limit, speed-ups) times: prompt (a forward pass over --seq-len tokens; the "
                "default for classification) or token (ms per generated token with the KV cache after a --seq-len "
                "prompt; the default for --task lm)"),
    "threads": (int, "threads for measurement (default: 2)"),
    "repeats": (int, "timed runs per measurement (default: 20)"),
    "warmup": (int, "untimed warm-up runs per measurement (default: 5)"),
    "max_length": (int, "tokenizer max length for training and evaluation (default: 64)"),
    "allow_pickle": (bool, "allow loading pickle-based weights (can run code: only for files you trust)"),
    "trust_remote_code": (bool, "allow the checkpoint's own Python code to run"),
    "disable": (list, "comma-separated plugin names to block"),
    "teacher_epochs": (float, "epochs of the one-time teacher fine-tuning from a base model (default: 2)"),
    "teacher_learning_rate": (float, "learning rate of the teacher fine-tuning (default: 5e-5)"),
    "train_limit": (int, "use at most this many training examples (teacher fine-tuning and recovery training)"),
    "eval_limit": (int, "evaluate on at most this many validation/test examples"),
    "cache_dir": (Path, "cache for demo data, fine-tuned teachers and data objects passed from Python "
                  "(default: $AUTOCOMPRESS_CACHE or ~/.cache/autocompress)"),
    "no_progress": (bool, "hide progress bars"),
    "trial_timeout": (float, "fail a trial that runs longer than this many seconds (the search goes on)"),
    "trial_memory_mb": (float, "fail a trial whose process memory grows by more than this many MB (search goes on)"),
    "isolate": (bool, "run each trial in a child process: a crash or a hard memory cap fails only that trial"),
    "heartbeat": (float, "seconds between worker heartbeats; a trial silent for 4x this is failed and retried"),
    "free_floor": (list, "targets the uncompressed teacher is measured on as the report's free floor (default: "
                   "every available target, or $AUTOCOMPRESS_FREE_FLOOR; 'none': no floor)"),
}


def _convert(key: str, value: Any, kind: type, source: str) -> Any:
    where = f"{source}: '{key}'"
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise InputError(f"{where} must be a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool):
            raise InputError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"{where} must be a number, got {value!r}") from None
    if kind is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where} must be a list of names, got {value!r}")
        return value
    if kind is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise InputError(f"{where} must be a path, got {value!r}")
        return Path(value)
    if kind is PathOrHubId:
        if not isinstance(value, (str, os.PathLike)):
            raise InputError(f"{where} must be a directory or a Hugging Face Hub id, got {value!r}")
        return PathOrHubId(os.fspath(value))
    if isinstance(value, os.PathLike):  # from Python: a path where a file name or URL is expected
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InputError(f"{where} must be a string, got {value!r}")
    return value


def load_config_file(path: Path) -> dict[str, Any]:
    from autocompress.search_space import read_yaml

    try:
        doc = read_yaml(path)
    except InputError as exc:
        raise InputError(f"--config {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise InputError(f"{path}: expected a mapping of options, got {type(doc).__name__}")
    options = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, OPTIONS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InputError(f"{path}: unknown option '{key}' ({hint}valid: {', '.join(OPTIONS)})")
        options[name] = _convert(name, value, OPTIONS[name][0], str(path))
    # Relative paths in a config file are relative to the file, not to the working directory.
    for name, value in options.items():
        if isinstance(value, Path) and not value.is_absolute():
            options[name] = path.parent / value
        elif isinstance(value, PathOrHubId) and not Path(value).is_absolute() and (path.parent / value).exists():
            options[name] = PathOrHubId(path.parent / value)
    return options


def merge_options(config_file: Path | None, given: Mapping[str, Any], source: str = "command line") -> dict[str, Any]:
    """Options from ``config_file`` (if any), overridden by ``given`` (the command line, or the Python
    API's keyword arguments: ``source`` names them in errors). Unknown names are errors."""
    options = load_config_file(config_file) if config_file is not None else {}
    for key, value in given.items():
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InputError(f"{source}: unknown option '{key}' ({hint}valid: {', '.join(OPTIONS)})")
        if value is not None:
            options[key] = _convert(key, value, OPTIONS[key][0], source)
    return options


def command_line(options: Mapping[str, Any]) -> tuple[str, ...]:
    """``search --name value ...``: the command that runs with ``options`` (recorded in run.json for runs
    started from Python)."""
    args = ["search"]
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        kind = OPTIONS[name][0]
        if kind is bool:
            args += [flag] if value else []
        elif kind is list:
            args += [flag, ",".join(value)]
        else:
            args += [flag, str(value)]
    return tuple(args)


UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}
#: With --budget giving only wall time, the trial count is no limit.
UNLIMITED_TRIALS = 1_000_000


def parse_budget(text: str) -> tuple[int, float | None]:
    """'40' -> (40 trials, no time limit); '2h' -> (unlimited, 7200 s); '40,2h' -> both."""
    trials, timeout = None, None
    for part in (p.strip().lower() for p in str(text).split(",") if p.strip()):
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-z]*)", part)
        number, unit = match.groups() if match else (None, None)
        if number is None or (unit and unit not in UNITS) or (not unit and "." in number):
            raise InputError(f"--budget: {part!r} is neither a trial count (40) nor a duration (90s, 30m, 2h); "
                             "e.g. --budget 40,2h")
        if unit:
            if timeout is not None:
                raise InputError(f"--budget {text!r}: two durations")
            timeout = float(number) * UNITS[unit]
        else:
            if trials is not None:
                raise InputError(f"--budget {text!r}: two trial counts")
            trials = int(number)
        if (timeout is not None and timeout <= 0) or (trials is not None and trials < 1):
            raise InputError(f"--budget {text!r}: must be positive")
    if trials is None and timeout is None:
        raise InputError("--budget is empty; e.g. --budget 40, --budget 2h or --budget 40,2h")
    return (trials if trials is not None else UNLIMITED_TRIALS), timeout


def _starting_points(value: str | None) -> Path | None:
    from autocompress.search.starting_points import default_file

    if value is None:
        return default_file()
    return None if str(value).strip().lower() == "none" else Path(value)


def _free_floor(value: list[str] | None) -> tuple[str, ...] | None:
    """Target names for the free floor; None: every available target; (): none."""
    if value is None:
        value = [v for v in os.environ.get("AUTOCOMPRESS_FREE_FLOOR", "").split(",") if v.strip()] or None
    if value is None:
        return None
    names = tuple(str(v).strip() for v in value)
    return () if [n.lower() for n in names] == ["none"] else names


def settings_from_options(options: Mapping[str, Any]):
    """Build validated SearchSettings (imports stay light: no torch here)."""
    from autocompress.measure import MeasureSettings
    from autocompress.search.settings import SearchSettings
    from autocompress.study.limits import Limits, perplexity_drop_limit
    from autocompress.task import TaskOptions

    o = dict(options)
    task = o.get("task") or ("local" if o.get("model") or o.get("data") else "demo")
    task_fields = dict(
        model=o.get("model"), data=o.get("data"), text_column=o.get("text_column", "text"),
        text_pair_column=o.get("text_pair_column"),
        label_column=o.get("label_column", "label"), drop_missing=o.get("drop_missing", False),
        seed=o.get("seed", 0), max_length=o.get("max_length", 64), cache_dir=o.get("cache_dir"),
        allow_pickle=o.get("allow_pickle", False), trust_remote_code=o.get("trust_remote_code", False),
        teacher_epochs=o.get("teacher_epochs", 2.0), teacher_learning_rate=o.get("teacher_learning_rate", 5e-5),
        train_limit=o.get("train_limit"), progress=not o.get("no_progress", False),
        prompt_template=o.get("prompt_template"),
        label_words=tuple(o["label_words"]) if o.get("label_words") else None, unlabeled=o.get("unlabeled"),
        metric=o.get("metric"),
    )
    for name in ("max_length", "train_limit", "eval_limit"):
        if o.get(name) is not None and o[name] < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {o[name]}")
    for name in ("teacher_epochs", "teacher_learning_rate"):
        if o.get(name) is not None and not o[name] > 0:
            raise InputError(f"--{name.replace('_', '-')} must be greater than 0, got {o[name]}")
    try:
        measure = MeasureSettings(
            batch_size=o.get("batch_size", 1), seq_len=o.get("seq_len", 64), threads=o.get("threads", 2),
            repeats=o.get("repeats", 20), warmup=o.get("warmup", 5), latency=o.get("latency"),
        )
    except ValueError as exc:
        raise InputError(f"measurement setting: {exc}") from None
    drop, increase = o.get("max_accuracy_drop", 0.01), o.get("max_perplexity_increase")
    if increase is not None:
        if o.get("max_accuracy_drop") is not None:
            raise InputError("--max-perplexity-increase and --max-accuracy-drop limit the same quality: give one")
        Limits(max_perplexity_increase=increase)  # checks the value before it is converted
        drop = perplexity_drop_limit(increase)
    limits = Limits(
        max_latency_ms=o.get("max_latency_ms"), max_memory_mb=o.get("max_memory_mb"),
        max_accuracy_drop=drop, max_perplexity_increase=increase,
    )
    techniques = o.get("techniques")
    if o.get("budget") is not None:
        if o.get("trials") is not None or o.get("timeout") is not None:
            raise InputError("--budget replaces --trials and --timeout: give one or the other")
        o["trials"], o["timeout"] = parse_budget(o["budget"])
    return SearchSettings(
        task=task, task_options=TaskOptions(**task_fields), target=o.get("target", "cpu"), measure=measure,
        limits=limits, trials=o.get("trials"), timeout_s=o.get("timeout"),
        seed=o.get("seed", 0),
        sampler=o.get("sampler", "tpe"), pruner=o.get("pruner", "median"), prefer=o.get("prefer", "latency"),
        techniques=tuple(techniques) if techniques else None, search_space_file=o.get("search_space"),
        out=o.get("out"), storage=o.get("storage"), study=o.get("study"),
        disabled_plugins=tuple(o.get("disable") or ()), eval_limit=o.get("eval_limit"),
        progress=not o.get("no_progress", False), heartbeat_s=o.get("heartbeat", 30.0),
        trial_timeout_s=o.get("trial_timeout"), trial_memory_mb=o.get("trial_memory_mb"),
        isolate=o.get("isolate", False),
        starting_points=_starting_points(o.get("starting_points")),
        free_floor=_free_floor(o.get("free_floor")),
    )
