"""Put a local checkpoint into a Hugging Face Hub cache, in the Hub's own layout, without a network.

Tests of Hub-id resolution use it with ``HF_HOME`` pointed at a temporary folder and
``HF_HUB_OFFLINE=1``: the cache looks exactly as ``hf download`` leaves it (content-addressed
blobs, a snapshot folder of symlinks per commit, ``refs/main`` naming the commit).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def populate_hub_cache(cache_dir: Path, repo_id: str, source: Path, revision: str | None = None) -> Path:
    """Copy every file of ``source`` into ``cache_dir`` as the cached snapshot of model ``repo_id``.

    ``revision`` is the commit hash (default: derived from the files). Returns the snapshot folder.
    """
    files = sorted(p for p in Path(source).rglob("*") if p.is_file())
    digest = hashlib.sha1()
    for path in files:
        digest.update(str(path.relative_to(source)).encode())
        digest.update(path.read_bytes())
    revision = revision or digest.hexdigest()
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for path in files:
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
