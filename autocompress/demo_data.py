"""The default demo data: movie-review sentences rated by people (Hutto & Gilbert, ICWSM 2014).

The sentences ship only inside the source distribution of ``vaderSentiment==3.3.2``. It is
fetched once with pip into the cache, its SHA-256 is checked before anything is extracted,
and only the one needed file is extracted, through tarfile's "data" filter plus our own
check that nothing lands outside the cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from autocompress.data import TaskData, stratified_split
from autocompress.errors import DemoDataUnavailable
from autocompress.hashing import file_sha256

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
MANUAL_FETCH_COMMAND = "pip download --no-deps --no-binary :all: vadersentiment==3.3.2 -d <cache_dir>"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
REVIEWS_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
EXPECTED_ROWS, EXPECTED_POSITIVE = 10_568, 5_242


def default_cache_dir() -> Path:
    """``$AUTOCOMPRESS_CACHE``, or ``~/.cache/autocompress``."""
    return Path(os.environ.get("AUTOCOMPRESS_CACHE") or Path.home() / ".cache" / "autocompress")


def _download(directory: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "vadersentiment==3.3.2", "-d", str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DemoDataUnavailable(f"could not run pip to fetch the demo data ({exc}); fetch it by hand: "
                                  f"{MANUAL_FETCH_COMMAND}") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DemoDataUnavailable("could not fetch the demo data archive: " + " | ".join(tail)
                                  + f"; fetch it by hand: {MANUAL_FETCH_COMMAND}")


def fetch_vader_sdist(cache_dir: Path) -> Path:
    """The verified sdist in ``cache_dir`` (downloaded once; the hash is checked before use)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / VADER_SDIST
    if target.is_file() and file_sha256(target) == VADER_SHA256:
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        _download(Path(tmp))
        fetched = Path(tmp) / VADER_SDIST
        if not fetched.is_file():
            raise DemoDataUnavailable(f"pip did not produce {VADER_SDIST}; "
                                      f"fetch it by hand: {MANUAL_FETCH_COMMAND}")
        actual = file_sha256(fetched)
        if actual != VADER_SHA256:
            raise DemoDataUnavailable(f"{VADER_SDIST}: SHA-256 mismatch (expected {VADER_SHA256}, "
                                      f"got {actual}); refusing to use it. "
                                      f"Fetch it by hand: {MANUAL_FETCH_COMMAND}")
        fetched.replace(target)  # atomic: a half-written archive never sits under the final name
    return target


class UnsafeArchiveMember(DemoDataUnavailable):
    """A tar member that would write outside its target folder (or is not a regular file)."""


def safe_extract_member(tar: tarfile.TarFile, member_name: str, dest_dir: Path) -> Path:
    """Extract one regular-file member into ``dest_dir``; refuse anything that could escape it."""
    try:
        member = tar.getmember(member_name)
    except KeyError:
        raise DemoDataUnavailable(f"{tar.name}: no member {member_name!r}: "
                                  "not the expected archive") from None
    parts = Path(member.name).parts
    if member.name.startswith(("/", "\\")) or Path(member.name).is_absolute() or ".." in parts:
        raise UnsafeArchiveMember(f"refusing tar member {member.name!r}: absolute or '..' path")
    if not member.isfile():
        raise UnsafeArchiveMember(f"refusing tar member {member.name!r}: not a regular file (link or device)")
    dest_dir = dest_dir.resolve()
    target = (dest_dir / member.name).resolve()
    if not target.is_relative_to(dest_dir):
        raise UnsafeArchiveMember(f"refusing tar member {member.name!r}: it would land outside {dest_dir}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tar.extract(member, dest_dir, filter="data")
    return target


def parse_ground_truth(text: str) -> tuple[list[str], list[int]]:
    """Tab-separated id, mean rating, sentence -> (sentences, 1 if rating > 0 else 0); zeros dropped."""
    texts, labels = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            _, rating, sentence = line.split("\t", 2)
            value = float(rating)
        except ValueError:
            raise DemoDataUnavailable(f"line {number} is not 'id<TAB>rating<TAB>text': "
                                      "not the expected file") from None
        if value == 0:
            continue
        texts.append(sentence.strip())
        labels.append(1 if value > 0 else 0)
    return texts, labels


def _read_parsed_cache(parsed: Path) -> tuple[list[str], list[int]] | None:
    """The cached sentences and labels, or None when absent or not intact (then they are rebuilt)."""
    try:
        record = json.loads(parsed.read_text(encoding="utf-8"))
        texts, labels = record["texts"], record["labels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(texts) != EXPECTED_ROWS or len(labels) != EXPECTED_ROWS or sum(labels) != EXPECTED_POSITIVE:
        return None
    return texts, labels


def load_movie_reviews(cache_dir: Path | None = None) -> tuple[list[str], list[int]]:
    """All 10,568 non-neutral sentences and their polarity (cached after the first extraction)."""
    cache_dir = cache_dir or default_cache_dir()
    parsed = cache_dir / "vader" / "movie_reviews.json"
    cached = _read_parsed_cache(parsed)
    if cached is not None:
        return cached
    sdist = fetch_vader_sdist(cache_dir)
    work = cache_dir / "vader"
    with tarfile.open(sdist, "r:gz") as outer:
        inner_path = safe_extract_member(outer, INNER_ARCHIVE, work)
    with tarfile.open(inner_path, "r:gz") as inner:
        reviews_path = safe_extract_member(inner, REVIEWS_FILE, work)
    # The file is valid UTF-8 (accented names such as "Almodóvar", en dashes) with CRLF line ends,
    # which read_text's universal newlines drop; strict decoding, since the archive's hash is checked.
    try:
        texts, labels = parse_ground_truth(reviews_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, DemoDataUnavailable) as exc:
        raise DemoDataUnavailable(f"{reviews_path}: {exc}") from None
    if len(texts) != EXPECTED_ROWS or sum(labels) != EXPECTED_POSITIVE:
        raise DemoDataUnavailable(f"{reviews_path}: {len(texts)} rows / {sum(labels)} positive, expected "
                                  f"{EXPECTED_ROWS} / {EXPECTED_POSITIVE}: not the expected file")
    tmp = parsed.with_suffix(".tmp")
    tmp.write_text(json.dumps({"texts": texts, "labels": labels}), encoding="utf-8")
    tmp.replace(parsed)
    shutil.rmtree(work / "vaderSentiment-3.3.2", ignore_errors=True)
    return texts, labels


def load_demo_task_data(seed: int = 0, cache_dir: Path | None = None) -> TaskData:
    """The movie reviews split 0.8/0.1/0.1 by class with ``seed``; labels "negative"/"positive"."""
    texts, labels = load_movie_reviews(cache_dir)
    return stratified_split(texts, labels, ["negative", "positive"], seed=seed)
