"""Hugging Face Hub ids, resolved from the local cache only: autocompress never downloads a model.

``--model NAME`` (and ``compress(model=...)``) is a local directory when one of that spelling
exists; otherwise, when NAME reads as a Hub repository id (``name`` or ``org/name``), it is
looked up in the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``, read at call time) with huggingface_hub's own
``snapshot_download(local_files_only=True)``. A model that is not cached is an ``InputError``
that says how to fetch it on a connected machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from autocompress.errors import InputError

# huggingface_hub's rules for a repo id (validate_repo_id), checked here without importing it.
_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
_REPO_ID = re.compile(rf"{_PART}(/{_PART})?")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a ``--model`` value points: a directory, and the Hub id when it came from the cache."""

    directory: Path
    hub_id: str | None = None
    #: The cached commit (the snapshot folder's name) when resolved from the cache.
    revision: str | None = None

    def describe(self) -> str:
        if self.revision is not None:
            return f"{self.hub_id} (Hugging Face cache, revision {self.revision[:12]})"
        if self.hub_id is not None:
            return f"{self.hub_id} ({self.directory})"
        return str(self.directory)


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache this process would use, from the environment as it is now.

    Same precedence as huggingface_hub (whose constants are frozen when it is first imported):
    ``HF_HUB_CACHE``, the legacy ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME/hub``,
    ``XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``.
    """
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[variable])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def looks_like_hub_id(text: str) -> bool:
    """True for ``name`` or ``org/name`` spelled as the Hub allows (no ``--``, ``..``, leading ``./``)."""
    return bool(_REPO_ID.fullmatch(text)) and "--" not in text and ".." not in text and not text.endswith(".")


def download_hint(repo_id: str) -> str:
    """How to put ``repo_id`` into the cache on a machine that can reach the Hub."""
    return (f"on a machine that can reach the Hub run `hf download {repo_id}` (older huggingface_hub: "
            f"`huggingface-cli download {repo_id}`), then copy its cache folder "
            f"models--{repo_id.replace('/', '--')} into {hub_cache_dir()} here (or point HF_HOME at a copy of "
            "that machine's ~/.cache/huggingface)")


def resolve_model(value: str | os.PathLike, option: str = "--model") -> ResolvedModel:
    """A local directory of that spelling, else a Hub id found in the local cache (never downloaded).

    Raises ``InputError`` (exit code 2) naming the option when neither exists.
    """
    text = os.fspath(value)
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{option} {text}: not a directory (expected a Hugging Face checkpoint folder)")
        return ResolvedModel(path)
    if not looks_like_hub_id(text):
        raise InputError(f"{option} {text}: directory not found")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        snapshot = Path(snapshot_download(text, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        raise InputError(
            f"{option} {text}: no local directory of that name, and the Hugging Face Hub model '{text}' is not in "
            f"the local cache ({cache}); autocompress never downloads models: {download_hint(text)}") from None
    return ResolvedModel(snapshot, hub_id=text, revision=snapshot.name)


def card_license(model_dir: Path) -> str | None:
    """The ``license`` in a checkpoint's own model card front matter (README.md, as the Hub keeps it), or None."""
    card = model_dir / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    import yaml

    try:
        front = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return None
    value = front.get("license") if isinstance(front, dict) else None
    return str(value) if value else None
