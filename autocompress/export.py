"""``autocompress export``: one candidate of a run as a directory that ships.

The directory holds what ``best/`` holds (safetensors weights, config, tokenizer,
``autocompress.json``) plus a model card (README.md) whose YAML front matter is Hugging Face
Hub metadata (base_model, tags, pipeline_tag, library_name, license, a model-index with the
measured test accuracy, latency and memory and how they were measured), and optionally an ONNX
file checked against ONNX Runtime.

``transformers.pipeline(task, model=DIR)`` runs every export. A candidate whose layers have the
shapes config.json describes and that records no post-training step loads with plain
transformers. One that plain transformers cannot rebuild (per-layer shapes, int8) gets
``autocompress_model.py``, a small ``trust_remote_code`` module named in config.json's
``auto_map`` that calls ``autocompress.load_pretrained``: ``pipeline(task, model=DIR,
trust_remote_code=True)`` then runs the model that was measured. ``push_to_hub`` uploads the
folder with huggingface_hub's ``upload_folder``, or with ``dry_run`` only says what it would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocompress.errors import ExportError, InputError
from autocompress.metrics import metric_named
from autocompress.model_io import MANIFEST, loads_with_plain_transformers
from autocompress.report.facts import measurement_note, provenance_rows, trial_plan
from autocompress.report.run import RunData
from autocompress.sentence_export import write_sentence_transformers_files
from autocompress.study.layout import RunLayout
from autocompress.study.record import TEST_ACCURACY, VAL_ACCURACY, quality_name
from autocompress.teacher import validation_score

SHIM_MODULE = "autocompress_model"
SHIM_CLASS = "AutocompressModel"


@dataclass(frozen=True)
class TaskType:
    """What an export needs to know about one kind of task (see ``TaskProvider.pipeline_tag``)."""

    pipeline_tag: str  #: transformers' pipeline task, also the card's ``pipeline_tag``
    auto_class: str  #: the transformers Auto class that loads such a model (the shim's ``auto_map`` key)
    title: str  #: the model-index task name (its metric is the run's: run.json ``quality_metric``)
    example: str  #: a sample input for the card's usage snippet
    noun: str = "classifier"  #: what the card's title calls the model
    #: What an export of this type writes besides the model (``(directory, plain) -> what was written``,
    #: recorded under ``extra``): the sentence-transformers files of an embedding model. None: nothing.
    extra_files: Callable[[Path, bool], dict[str, Any]] | None = None


#: Every task type a task provider may declare. A new task type adds its entry here; a meta-test
#: checks that every registered task's ``pipeline_tag`` has one, and that its exports run in a pipeline.
TASK_TYPES = {
    "text-classification": TaskType("text-classification", "AutoModelForSequenceClassification",
                                    "Text Classification", "a gorgeous, witty film"),
    "token-classification": TaskType("token-classification", "AutoModelForTokenClassification",
                                     "Token Classification", "Anna Smith visited Paris"),
    "text-generation": TaskType("text-generation", "AutoModelForCausalLM", "Text Generation", "The film was",
                                "language model"),
    "feature-extraction": TaskType("feature-extraction", "AutoModel", "Feature Extraction", "a gorgeous, witty film",
                                   "sentence embedding model", extra_files=write_sentence_transformers_files),
}


def task_type(run: RunData) -> TaskType:
    tag = (run.record.get("task_info") or {}).get("pipeline_tag") or "text-classification"
    if tag not in TASK_TYPES:
        raise ExportError(f"task type '{tag}' has no export to transformers' pipelines (known: "
                          f"{', '.join(TASK_TYPES)})")
    return TASK_TYPES[tag]


def candidate_dir(run_dir: Path, run: RunData, trial: int | None) -> tuple[int, Path]:
    """The saved weights of ``trial`` (default: the recommended one), or an error saying what is kept."""
    if trial is None:
        trial = run.document["recommended"]
        if trial is None:
            raise InputError(f"{run_dir}: no candidate met the limits, so there is no recommended model; "
                             "pass --trial N (see trials.csv) for a kept candidate")
    if trial not in set(run.frame["number"]):
        raise InputError(f"--trial {trial}: no such trial in study '{run.study.study_name}' "
                         f"(trials 0-{len(run.frame) - 1})")
    layout = RunLayout(run_dir)
    source = layout.candidate(trial)
    if not (source / MANIFEST).is_file():
        kept = [number for number, path in layout.saved_candidates().items() if (path / MANIFEST).is_file()]
        row = run.frame[run.frame["number"] == trial].iloc[0]
        why = ("it did not meet the limits" if not row["feasible"]
               else "it fell off the Pareto front, and only front candidates are kept")
        raise InputError(f"--trial {trial}: no saved weights ({why}); exportable trials: "
                         f"{', '.join(map(str, kept)) or 'none'}")
    return trial, source


def export(run_dir: Path, run: RunData, to: Path, trial: int | None = None, onnx: bool = False,
           host: Any = None, *, license: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Write the candidate to ``to`` (must not exist or be empty). Returns what was written.

    ``host`` (the plugin host) rebuilds the model for ``onnx`` (default: the installed plugins).
    ``license`` overrides the base model's (from its own model card); ``name`` is the model-index
    name (default: the folder's name; a Hub repository id when pushing).
    """
    trial, source = candidate_dir(run_dir, run, trial)
    kind = task_type(run)
    if to.exists() and any(to.iterdir()):
        raise InputError(f"--to {to}: exists and is not empty; choose a new directory")
    staging = to.with_name(f".{to.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    try:
        row = run.frame[run.frame["number"] == trial].iloc[0]
        plain = loads_with_plain_transformers(staging)
        if not plain:
            write_shim(staging, kind)
        manifest = json.loads((staging / MANIFEST).read_text())
        front = front_matter(run, row, kind, manifest, license=license, name=name or to.name)
        (staging / "README.md").write_text(model_card(run, row, plain, front, kind), encoding="utf-8")
        written: dict[str, Any] = {"trial": trial, "directory": str(to), "plain_transformers": plain,
                                   "front_matter": front}
        if kind.extra_files is not None:
            written["extra"] = kind.extra_files(staging, plain)
        if onnx:
            written["onnx"] = _export_onnx(staging, run, host)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written is left behind
        raise
    if to.exists():
        to.rmdir()
    staging.rename(to)
    if onnx:
        written["onnx"]["path"] = str(to / Path(written["onnx"]["path"]).name)
    return written


SHIM = '''"""Loads this autocompress export through transformers' Auto classes and pipelines.

Its layer shapes differ from what config.json describes, or it records post-training steps
such as int8 quantization, so plain transformers cannot rebuild it. With trust_remote_code=True,
transformers uses this class, which calls autocompress.load_pretrained (pip install autocompress):
the model you get is the one that was measured.
"""

import os

from transformers import PreTrainedModel, {config_class}


class {shim_class}(PreTrainedModel):
    config_class = {config_class}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        import autocompress

        directory = str(pretrained_model_name_or_path)
        if not os.path.isdir(directory):  # a Hub repository id: its files from the cache (or the Hub)
            from huggingface_hub import snapshot_download

            directory = snapshot_download(directory, revision=kwargs.get("revision"), token=kwargs.get("token"),
                                          cache_dir=kwargs.get("cache_dir"),
                                          local_files_only=kwargs.get("local_files_only", False))
        model, _ = autocompress.load_pretrained(directory)
        return model
'''


def write_shim(directory: Path, kind: TaskType) -> None:
    """Add the ``trust_remote_code`` loader and name it in config.json's ``auto_map``."""
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    from transformers import AutoConfig

    config_class = type(AutoConfig.for_model(config["model_type"])).__name__
    (directory / f"{SHIM_MODULE}.py").write_text(SHIM.format(config_class=config_class, shim_class=SHIM_CLASS))
    config["auto_map"] = {kind.auto_class: f"{SHIM_MODULE}.{SHIM_CLASS}"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _export_onnx(directory: Path, run: RunData, host: Any = None) -> dict[str, Any]:
    from autocompress.model_io import load_pretrained
    from autocompress.onnx_export import check_onnx, export_onnx
    from autocompress.plugin_manager import build_host

    host = host or build_host()  # rebuilding the model needs the techniques that made it
    model, tokenizer = load_pretrained(directory, host.techniques, host.architectures)
    seq_len = int(run.record.get("measure", {}).get("seq_len", 64))
    path = export_onnx(model, directory / "model.onnx", seq_len=seq_len)
    return {"path": str(path), "check": check_onnx(model, tokenizer, path)}


def front_matter(run: RunData, row: Any, kind: TaskType, manifest: dict[str, Any], *, license: str | None,
                 name: str) -> dict[str, Any]:
    """The model card's Hub metadata: what the Hub indexes and shows beside the card."""
    info = run.record.get("task_info") or {}
    measure = run.record.get("measure", {})
    machine = run.record.get("machine", {})
    techniques = [step["technique"] for step in manifest.get("plan", [])]
    quality = quality_name(run.record)
    per_token = "per generated token (KV cache, after the prompt), " if measure.get("latency") == "token" else ""
    how = (f"{per_token}median of {measure.get('repeats')} timed runs after {measure.get('warmup')} warm-up, batch "
           f"{measure.get('batch_size')}, sequence length {measure.get('seq_len')}, {measure.get('threads')} threads, "
           f"target '{run.record.get('target', '?')}' on {machine.get('cpu', 'an unrecorded CPU')}")
    dataset = str(info.get("dataset") or run.record.get("task", "unknown"))
    dataset_name = Path(dataset).name if Path(dataset).exists() else dataset
    front: dict[str, Any] = {}
    if info.get("base_model"):
        front["base_model"] = info["base_model"]
    license = license or info.get("license")
    if license:
        front["license"] = license
    front.update({
        "library_name": "transformers",
        "pipeline_tag": kind.pipeline_tag,
        "tags": ["autocompress", "compressed", *dict.fromkeys(techniques)],
        "model-index": [{
            "name": name,
            "results": [{
                "task": {"type": kind.pipeline_tag, "name": kind.title},
                "dataset": {"name": dataset_name, "type": dataset_name, "split": "test"},
                "metrics": [
                    {"type": quality, "value": round(float(row[TEST_ACCURACY]), 4),
                     "name": f"test {quality} (teacher: {float(run.baseline[TEST_ACCURACY]):.4f})"},
                    {"type": "latency_ms", "value": round(float(row["latency_ms"]), 3),
                     "name": f"latency (ms), {how}; {float(row['speedup']):.2f}x faster than the teacher measured "
                             "beside it"},
                    {"type": "memory_mb", "value": round(float(row["memory_mb"]), 2),
                     "name": f"memory (MB): weights as the target holds them plus inference working memory "
                             f"(teacher: {float(run.baseline['memory_mb']):.1f} MB)"},
                ],
            }],
        }],
    })
    return front


def front_matter_text(front: dict[str, Any]) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def model_card(run: RunData, row: Any, plain_loadable: bool, front: dict[str, Any], kind: TaskType) -> str:
    base = run.baseline
    record = run.trials[int(row["number"])]
    plan = trial_plan(record)
    manifest_plan = json.dumps([step.as_manifest() for step in record.steps or ()])
    info = run.record.get("task_info") or {}
    training = info.get("teacher_training")
    if plain_loadable:
        use = [
            "```python",
            "from transformers import pipeline",
            f"classify = pipeline(\"{kind.pipeline_tag}\", model=\"path/to/this/directory\")",
            f"classify([\"{kind.example}\"])",
            "```", "",
            f"Plain `transformers.{kind.auto_class}.from_pretrained(dir)` loads this directory too: every layer has "
            "the shape its config describes and no post-training step is recorded. So does "
            "`autocompress.load_pretrained(dir)`.",
        ]
    else:
        use = [
            "```python",
            "from transformers import pipeline  # needs: pip install autocompress",
            f"classify = pipeline(\"{kind.pipeline_tag}\", model=\"path/to/this/directory\", trust_remote_code=True)",
            f"classify([\"{kind.example}\"])",
            "```", "",
            "Plain `transformers` alone cannot rebuild this model (its layer shapes differ from what the config "
            "describes, or a post-training step such as int8 quantization is recorded). "
            f"`{SHIM_MODULE}.py`, named in config.json's `auto_map`, is the `trust_remote_code` loader: it calls "
            "`autocompress.load_pretrained`, which rebuilds the layers and re-applies the recorded steps, so the "
            "pipeline runs the model measured above. Without `trust_remote_code=True` transformers either refuses "
            "(shapes differ) or loads the float weights saved before the post-training steps, which are not the "
            "measured model.",
        ]
    teacher = ("the given checkpoint" if not training else
               f"fine-tuned here from {training.get('base_model_name', '?')} ({training.get('epochs')} epochs, "
               f"learning rate {training.get('learning_rate')}; {validation_score(training)})")
    metric = metric_named(quality_name(run.record))
    quality, shown = metric.shown_as(), metric.display  # as people read it (perplexity for a language model)
    # A ratio of the stored values means something only when they are what is shown (not log-likelihoods).
    ratio = f"{100 * row[TEST_ACCURACY] / base[TEST_ACCURACY]:.1f}%" if quality == metric.name else ""
    lines = [
        front_matter_text(front),
        f"# Compressed {kind.noun} (autocompress trial #{int(row['number'])})", "",
        f"Made by autocompress from the task '{run.record.get('task', '?')}' "
        f"({run.record.get('task_description', '')}). Teacher: {teacher}.", "",
        f"**Techniques**: {plan}.", "",
        "## Measured", "",
        "| | this model | teacher | ratio |", "|---|---:|---:|---:|",
        f"| test {quality} | {shown(row[TEST_ACCURACY])} | {shown(base[TEST_ACCURACY])} | {ratio} |",
        f"| validation {quality} | {shown(row[VAL_ACCURACY])} | {shown(base[VAL_ACCURACY])} | |",
        f"| latency median (ms) | {row['latency_ms']:.2f} | {row['teacher_latency_ms']:.2f} | "
        f"{row['speedup']:.2f}× faster |",
        f"| latency p90 (ms) | {row['latency_p90_ms']:.2f} | {base['latency_p90_ms']:.2f} | |",
        f"| memory (MB) | {row['memory_mb']:.1f} | {base['memory_mb']:.1f} | "
        f"{base['memory_mb'] / row['memory_mb']:.2f}× smaller |",
        f"| parameters | {int(row['parameters']):,} | {int(base['parameters']):,} | |", "",
        measurement_note(run), "",
        "## Use it", "",
        *use, "",
        "```python",
        "import autocompress",
        "model, tokenizer = autocompress.load_pretrained(\"path/to/this/directory\")",
        f"logits = model(**tokenizer([\"{kind.example}\"], return_tensors=\"pt\")).logits",
        "```", "",
        "`load_pretrained` lets each technique recorded in `autocompress.json` rebuild the structure it "
        "changed (per-layer head counts and FFN widths, low-rank factors, shared layers), ties shared weights "
        "again and re-applies post-training steps such as int8 quantization. It unpickles nothing: weights are "
        "safetensors.", "",
        "## Provenance", "", "| | |", "|---|---|",
        *[f"| {k} | {v.replace('|', '/')} |" for k, v in provenance_rows(run)],
        f"| plan | `{manifest_plan}` |", "",
    ]
    return "\n".join(lines)


def read_front_matter(card: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (README.md), as a dict."""
    import yaml

    text = card.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ExportError(f"{card}: no YAML front matter")
    return yaml.safe_load(text.split("---\n", 2)[1]) or {}


def check_repo_id(repo_id: str) -> None:
    """A Hub model repository id one can push to: ``owner/name``."""
    from autocompress.hub import looks_like_hub_id

    if "/" not in repo_id or not looks_like_hub_id(repo_id):
        raise InputError(f"--push-to-hub {repo_id}: not a Hub repository id of the form owner/name")


def push_to_hub(directory: Path, repo_id: str, *, dry_run: bool, private: bool = False) -> str:
    """Upload an exported folder as Hub model ``repo_id`` (created when missing); with ``dry_run``, upload
    nothing and return what would be uploaded: the repository, every file and its size, the card's metadata."""
    check_repo_id(repo_id)
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    lines = [f"{'dry run: would upload' if dry_run else 'uploading'} {len(files)} files ({total / 2**20:.1f} MB) "
             f"to the Hugging Face Hub model repository '{repo_id}' (created if missing"
             f"{', private' if private else ''}):"]
    lines += [f"  {p.relative_to(directory)!s:<40} {p.stat().st_size:>12,} bytes" for p in files]
    lines += ["model card front matter (README.md):", front_matter_text(read_front_matter(directory / "README.md"))]
    if dry_run:
        return "\n".join(lines + ["nothing was uploaded (--dry-run)"])
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(directory),
                                   commit_message="Upload a model compressed by autocompress")
    except Exception as exc:  # network, authentication, offline mode: huggingface_hub raises many kinds
        raise ExportError(f"--push-to-hub {repo_id}: upload failed ({type(exc).__name__}: {exc}); log in with "
                          "`hf auth login` (or set HF_TOKEN) on a machine that reaches the Hub, or upload the "
                          f"folder {directory} from one") from None
    return "\n".join(lines + [f"uploaded: {getattr(commit, 'commit_url', commit)}"])
