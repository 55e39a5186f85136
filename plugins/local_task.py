"""A user's own task: a local Hugging Face sequence-classification checkpoint and a data file.

The checkpoint is taken as the (already fine-tuned) teacher. Weights load from safetensors
only; pickle-based files (``pytorch_model.bin``) are refused unless the user opts in, and
``trust_remote_code`` stays off unless set.
"""

from __future__ import annotations

import json
from pathlib import Path

from autocompress import hookimpl
from autocompress.data import TaskData, load_task_data
from autocompress.errors import InputError
from autocompress.hashing import directory_sha256
from autocompress.task import LoadedTask, TaskProvider, load_classifier

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def check_model_dir(model_dir: Path, allow_pickle: bool) -> dict:
    """Cheap checks of a checkpoint directory; returns its config.json as a dict."""
    if not model_dir.exists():
        raise InputError(f"--model {model_dir}: directory not found")
    if not model_dir.is_dir():
        raise InputError(f"--model {model_dir}: not a directory (expected a Hugging Face checkpoint folder)")
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--model {model_dir}: no config.json (not a Hugging Face checkpoint)") from None
    except ValueError as exc:
        raise InputError(f"{config_path}: not valid JSON ({exc}); expected a Hugging Face config.json") from None
    except OSError as exc:
        raise InputError(f"{config_path}: unreadable: {exc}") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_path}: expected a JSON object (a Hugging Face config.json), "
                         f"got {type(config).__name__}")
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise InputError(
            f"{config_path}: architectures {architectures} is not a sequence classifier "
            "(expected e.g. BertForSequenceClassification)"
        )
    has_safe = any((model_dir / name).is_file() for name in SAFE_WEIGHTS)
    has_pickle = any((model_dir / name).is_file() for name in PICKLE_WEIGHTS)
    if not has_safe and has_pickle and not allow_pickle:
        raise InputError(
            f"--model {model_dir}: weights are only in pickle format (pytorch_model.bin), which can run "
            "arbitrary code when loaded; convert them to safetensors or pass --allow-pickle if you trust the file"
        )
    if not has_safe and not has_pickle:
        raise InputError(f"--model {model_dir}: no weights file (expected model.safetensors)")
    return config


def config_num_labels(config: dict) -> int:
    if "id2label" in config:
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


class LocalTask(TaskProvider):
    name = "local"
    description = "your own checkpoint (--model DIR) and data file (--data FILE: CSV, JSONL or Parquet)"

    def _data(self) -> TaskData:
        o = self.options
        return load_task_data(o.data, o.text_column, o.label_column, seed=o.seed, drop_missing=o.drop_missing)

    def validate(self) -> None:
        o = self.options
        if o.model is None or o.data is None:
            raise InputError("your own task needs both --model DIR and --data FILE")
        config = check_model_dir(Path(o.model), o.allow_pickle)
        data = self._data()
        expected = config_num_labels(config)
        if expected != data.num_labels:
            raise InputError(
                f"--model {o.model} has {expected} labels but --data {o.data} has {data.num_labels} classes "
                f"({', '.join(data.label_names)})"
            )
        self._validated = data

    def load(self) -> LoadedTask:
        o = self.options
        data = getattr(self, "_validated", None) or self._data()
        model_dir = Path(o.model)
        has_safe = any((model_dir / name).is_file() for name in SAFE_WEIGHTS)
        try:
            teacher, tokenizer = load_classifier(model_dir, use_safetensors=has_safe,
                                                 trust_remote_code=o.trust_remote_code)
        except Exception as exc:  # corrupt weights, unknown model type: transformers and safetensors raise many kinds
            weights = SAFE_WEIGHTS[0] if has_safe else PICKLE_WEIGHTS[0]
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"--model {model_dir}: cannot load the checkpoint ({type(exc).__name__}: {first_line}); "
                             f"expected a complete Hugging Face sequence-classification checkpoint with {weights}, "
                             "config.json and the tokenizer files") from None
        return LoadedTask(
            teacher=teacher,
            tokenizer=tokenizer,
            data=data,
            fingerprint=f"{directory_sha256(model_dir)[:12]}-{data.fingerprint()[:12]}",
            description=f"{model_dir} on {o.data}",
        )


@hookimpl
def autocompress_register_tasks(register):
    register.add(LocalTask)
