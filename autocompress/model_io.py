"""Save and reload compressed candidates.

What is saved is the float model before post-training steps, as ``model.safetensors`` (each
distinct tensor once: a tensor shared by several modules is written under its first name and
the other names are recorded as ties), its ``config.json`` (the final model's configuration),
the tokenizer, and ``autocompress.json``: the format version, the structure record (the
configuration before the first structure step, then each structure step with its technique,
version, config, recorded state and config changes; see ``autocompress.structure``), the ties,
the post steps and measured numbers.

Reloading builds the model from the recorded base configuration, lets each structure step's
technique rebuild what it changed (``Technique.rebuild``), loads the weights strictly, ties
shared tensors again, then re-applies the post steps, which are deterministic functions of the
float weights. This module knows no layer shape and no technique: the techniques registry it
is given does. Nothing is unpickled.

When every saved tensor has the shape ``config.json`` implies, every tensor is present (no ties)
and no post step is recorded, the plain transformers class recorded in the manifest
(``model_class``: ``BertForSequenceClassification``, ``LlamaForCausalLM``, ...) loads the directory
with its ``from_pretrained`` too, and so does the matching Auto class (``loads_with_plain_transformers``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file, save_file
from torch import nn

from autocompress import __version__
from autocompress.deployment import restore_deployment
from autocompress.errors import InputError
from autocompress.shared_weights import distinct_state, tie
from autocompress.structure import StructureRecord, rebuild_model, resolve_technique, structure_of

if TYPE_CHECKING:
    from autocompress.registry import Registry

MANIFEST = "autocompress.json"
WEIGHTS = "model.safetensors"
#: 2: structure record and ties (plugin API 1.3). 1: shapes inferred from the saved tensors.
FORMAT_VERSION = 2
#: State-dict entries a model derives itself and that may be absent from a file.
DERIVED_SUFFIXES = ("position_ids",)


def save_candidate(
    directory: str | Path,
    float_model: nn.Module,
    tokenizer: Any,
    post_steps: list[dict[str, Any]],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``float_model`` (before post steps), its tokenizer and manifest to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    distinct, ties = distinct_state(float_model)
    # safetensors refuses tensors that share memory; distinct ones may still be views of one storage.
    save_file({k: v.detach().contiguous().clone() for k, v in distinct.items()}, str(directory / WEIGHTS),
              metadata={"format": "pt"})
    float_model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    record = structure_of(float_model) or StructureRecord(base_config=float_model.config.to_dict())
    manifest = {
        "format": FORMAT_VERSION,
        "autocompress_version": __version__,
        "model_class": model_class_name(float_model),
        "structure": record.to_manifest(),
        "ties": ties,
        "post_steps": post_steps,
        **(info or {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return directory


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of ``directory``; InputError when there is none or it was written by a newer format."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise InputError(f"{directory}: no {MANIFEST}; not a directory written by autocompress")
    try:
        manifest = json.loads(path.read_text())
        saved = int(manifest.get("format", 1))
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a valid autocompress manifest ({exc})") from None
    if saved > FORMAT_VERSION:
        raise InputError(f"{path}: written in autocompress save format {saved} (by autocompress "
                         f"{manifest.get('autocompress_version', '?')}), but this autocompress {__version__} reads "
                         f"formats up to {FORMAT_VERSION}; upgrade autocompress to load it")
    return manifest


def model_class_name(model: nn.Module) -> str:
    """What a manifest's ``model_class`` records: a transformers class's own name, or the dotted path
    of a model class autocompress defines (``autocompress.embedding.SentenceEncoder``)."""
    cls = type(model)
    own = cls.__module__ == "autocompress" or cls.__module__.startswith("autocompress.")
    return f"{cls.__module__}.{cls.__qualname__}" if own else cls.__name__


def model_class(manifest: dict[str, Any], where: str) -> type[nn.Module]:
    """The transformers model class a manifest's ``model_class`` names (the task's own class: a sequence
    classifier, a causal LM, a token classifier, a bare encoder), or a model class of autocompress's
    own named by its dotted path (``model_class_name``; nothing outside autocompress is imported).
    Manifests written before the field existed held sequence classifiers."""
    import importlib

    import transformers
    from transformers import PreTrainedModel

    name = manifest.get("model_class") or "AutoModelForSequenceClassification"
    module_name, _, class_name = name.rpartition(".")
    if module_name.startswith("autocompress.") and class_name.isidentifier():
        try:
            found = getattr(importlib.import_module(module_name), class_name, None)
        except ImportError:
            found = None
        if isinstance(found, type) and issubclass(found, PreTrainedModel):
            return found
        raise InputError(f"{where}: {MANIFEST} names model class '{name}', which this autocompress {__version__} "
                         "does not have")
    found = getattr(transformers, name, None) if name.isidentifier() else None
    if name.startswith("AutoModel") and found is not None:
        return found
    if not (isinstance(found, type) and issubclass(found, PreTrainedModel)):
        raise InputError(f"{where}: {MANIFEST} names model class '{name}', which is not a transformers model class "
                         f"in transformers {transformers.__version__}")
    return found


def load_pretrained(directory: str | Path, techniques: Registry, architectures: Registry) -> tuple[nn.Module, Any]:
    """Reload a directory written by autocompress (``best/`` or an export): returns (model, tokenizer).

    ``techniques`` rebuild the recorded structure steps and re-apply the post steps;
    ``architectures`` name the model's parts for them. The model is in eval mode and in its
    deployed form (quantized when the plan quantized it).
    """
    from transformers import AutoConfig, AutoTokenizer

    directory = Path(directory)
    manifest = read_manifest(directory)
    where = str(directory)
    cls = model_class(manifest, where)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    state = load_file(str(directory / WEIGHTS))
    final = AutoConfig.from_pretrained(directory, local_files_only=True).to_dict()
    # Format 1 recorded no structure: the final configuration, then the saved shapes, describe it.
    record = (StructureRecord.from_manifest(manifest["structure"], where) if "structure" in manifest
              else StructureRecord(base_config=final))

    def build(config: dict[str, Any]) -> nn.Module:
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        return cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)

    shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    model = rebuild_model(record, final, build, techniques, architectures, tokenizer, shapes, where,
                          infer_shapes="structure" not in manifest)
    ties = manifest.get("ties") or {}
    for alias, canonical in ties.items():
        state[alias] = state[canonical]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that differs is raised, not listed
        raise InputError(f"{directory}: weights do not match the rebuilt model: {exc}") from None
    missing = [k for k in missing if not k.endswith(DERIVED_SUFFIXES)]
    if missing or unexpected:
        raise InputError(f"{directory}: weights do not match the rebuilt model: missing {missing}, "
                         f"unexpected {unexpected}")
    tie(model, ties)
    model.eval()
    if manifest.get("post_steps"):
        model = apply_post_steps(model, tokenizer, manifest["post_steps"], techniques, architectures, where)
        model = restore_deployment(directory, model)  # what a runtime needs to finish it (static int8)
    return model, tokenizer


def apply_post_steps(model: nn.Module, tokenizer: Any, steps: list[dict[str, Any]], techniques: Registry,
                     architectures: Registry, where: str = "post steps") -> nn.Module:
    """Re-apply recorded post-training steps (``Plan.to_manifest`` form), each version-checked."""
    from autocompress.arch import adapter_for
    from autocompress.technique import ApplyContext

    context = ApplyContext(adapter=adapter_for(model, architectures), tokenizer=tokenizer)
    for step in steps:
        technique = resolve_technique(techniques, step["technique"], step.get("version", "1"), where)
        model = technique().apply(model, technique.make_config(step["config"]), context)
    return model.eval()


def loads_with_plain_transformers(directory: str | Path) -> bool:
    """True when the recorded transformers class's ``from_pretrained(directory)`` gives the same model:
    every tensor the config implies is saved (no ties), at that shape, and no post step is recorded."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("post_steps") or manifest.get("ties"):
        return False
    cls = model_class(manifest, str(directory))
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    with torch.device("meta"):
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(directory / WEIGHTS), framework="pt") as saved:
        shapes = {k: tuple(saved.get_slice(k).get_shape()) for k in saved.keys()}  # noqa: SIM118
    return all(expected.get(k) == shape for k, shape in shapes.items()) and all(
        k in shapes or k.endswith(DERIVED_SUFFIXES) for k in expected)
