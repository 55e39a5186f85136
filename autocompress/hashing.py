"""Content hashes for cache keys and archive checks (never a name alone)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_sha256(directory: Path, exclude: tuple[str, ...] = ()) -> str:
    """Hex SHA-256 over every file's relative path and content, in sorted order (files named in
    ``exclude`` left out)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in exclude):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
