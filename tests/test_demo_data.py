"""Demo data: SHA-256 check before use, extraction that cannot escape the cache, the real archive."""

import hashlib
import io
import subprocess
import tarfile

import pytest

from autocompress import demo_data
from autocompress.errors import DemoDataUnavailable


def _tar_with(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name, payload=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def _link(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_a_wrong_archive_is_refused_with_both_hashes_and_the_manual_command(tmp_path, monkeypatch):
    (tmp_path / demo_data.VADER_SDIST).write_bytes(b"tampered cache")

    def fake_download(directory):
        (directory / demo_data.VADER_SDIST).write_bytes(b"not the real archive")

    monkeypatch.setattr(demo_data, "_download", fake_download)
    with pytest.raises(DemoDataUnavailable) as error:
        demo_data.fetch_vader_sdist(tmp_path)
    message = str(error.value)
    assert "SHA-256 mismatch" in message and demo_data.VADER_SHA256 in message
    assert hashlib.sha256(b"not the real archive").hexdigest() in message
    assert "pip download --no-deps --no-binary :all: vadersentiment==3.3.2 -d <cache_dir>" in message
    # The wrong download never replaced anything, and no temporary folder is left behind.
    assert (tmp_path / demo_data.VADER_SDIST).read_bytes() == b"tampered cache"
    assert [p.name for p in tmp_path.iterdir()] == [demo_data.VADER_SDIST]


def test_a_verified_cached_archive_is_used_without_downloading(tmp_path, monkeypatch):
    (tmp_path / demo_data.VADER_SDIST).write_bytes(b"pretend archive")
    monkeypatch.setattr(demo_data, "VADER_SHA256", hashlib.sha256(b"pretend archive").hexdigest())
    monkeypatch.setattr(demo_data, "_download", lambda directory: pytest.fail("downloaded again"))
    assert demo_data.fetch_vader_sdist(tmp_path) == tmp_path / demo_data.VADER_SDIST


def test_a_failed_pip_run_names_the_manual_command(tmp_path, monkeypatch):
    def failing_run(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and kwargs["timeout"] == 300
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(demo_data.subprocess, "run", failing_run)
    with pytest.raises(DemoDataUnavailable, match="No matching distribution.*fetch it by hand: pip download"):
        demo_data.fetch_vader_sdist(tmp_path)


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "ABSOLUTE"])
def test_members_that_would_escape_are_refused(tmp_path, name):
    name = str(tmp_path / "evil-absolute.txt") if name == "ABSOLUTE" else name
    archive = _tar_with(tmp_path / "evil.tar.gz", [_file(name)])
    target = tmp_path / "cache" / "inner"
    with tarfile.open(archive) as tar, pytest.raises(demo_data.UnsafeArchiveMember, match="absolute or '..'"):
        demo_data.safe_extract_member(tar, name, target)
    assert not list(tmp_path.rglob("evil*.txt")) and not target.exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused(tmp_path, kind):
    archive = _tar_with(tmp_path / "evil.tar.gz", [_link("data/link.txt", kind, "/etc/passwd")])
    with tarfile.open(archive) as tar, pytest.raises(demo_data.UnsafeArchiveMember, match="not a regular"):
        demo_data.safe_extract_member(tar, "data/link.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_member_reached_through_a_symlinked_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a").symlink_to(outside)
    archive = _tar_with(tmp_path / "x.tar.gz", [_file("a/b.txt")])
    with tarfile.open(archive) as tar, pytest.raises(demo_data.UnsafeArchiveMember, match="land outside"):
        demo_data.safe_extract_member(tar, "a/b.txt", tmp_path / "out")
    assert not list(outside.iterdir())


def test_a_regular_member_is_extracted_inside_the_target(tmp_path):
    archive = _tar_with(tmp_path / "ok.tar.gz", [_file("a/b.txt", b"hello")])
    with tarfile.open(archive) as tar:
        path = demo_data.safe_extract_member(tar, "a/b.txt", tmp_path / "out")
        with pytest.raises(DemoDataUnavailable, match="no member 'a/c.txt': not the expected archive"):
            demo_data.safe_extract_member(tar, "a/c.txt", tmp_path / "out")
    assert path == (tmp_path / "out" / "a" / "b.txt").resolve() and path.read_bytes() == b"hello"


def test_parse_ground_truth_labels_by_sign_and_drops_zeros():
    texts, labels = demo_data.parse_ground_truth("1\t2.5\tgood film\r\n2\t-0.6\tdull\n3\t0\tmeh\n")
    assert texts == ["good film", "dull"] and labels == [1, 0]
    with pytest.raises(DemoDataUnavailable, match="line 2 is not"):
        demo_data.parse_ground_truth("1\t2.5\tgood\n2 no tabs\n")


def _fake_sdist(tmp_path, ground_truth: str):
    """An archive laid out like the real sdist: a tar.gz inside a tar.gz."""
    inner = _tar_with(tmp_path / "inner.tar.gz", [_file(demo_data.REVIEWS_FILE, ground_truth.encode())])
    return _tar_with(tmp_path / "sdist.tar.gz", [_file(demo_data.INNER_ARCHIVE, inner.read_bytes())])


def test_the_archive_chain_is_parsed_cached_and_checked(tmp_path, monkeypatch):
    rows = "1\t1.5\tCaf\u00e9 Almod\u00f3var \u2013 fine\r\n2\t-2\tdull\r\n3\t0\tmeh\r\n"
    sdist = _fake_sdist(tmp_path, rows)
    fetches = []
    monkeypatch.setattr(demo_data, "fetch_vader_sdist", lambda cache_dir: fetches.append(cache_dir) or sdist)
    cache = tmp_path / "cache"
    with pytest.raises(DemoDataUnavailable, match="2 rows / 1 positive, expected 10568 / 5242"):
        demo_data.load_movie_reviews(cache)

    monkeypatch.setattr(demo_data, "EXPECTED_ROWS", 2)
    monkeypatch.setattr(demo_data, "EXPECTED_POSITIVE", 1)
    expected = (["Caf\u00e9 Almod\u00f3var \u2013 fine", "dull"], [1, 0])
    assert demo_data.load_movie_reviews(cache) == expected
    assert demo_data.load_movie_reviews(cache) == expected and len(fetches) == 2  # second from the cache
    (cache / "vader" / "movie_reviews.json").write_text("{broken")
    assert demo_data.load_movie_reviews(cache) == expected and len(fetches) == 3  # rebuilt


@pytest.mark.slow
def test_the_real_archive_gives_the_documented_counts_and_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    texts, labels = demo_data.load_movie_reviews()
    assert len(texts) == 10_568 and sum(labels) == 5_242
    assert any("Almod\u00f3var" in text for text in texts)  # decoded as UTF-8, not latin-1
    data = demo_data.load_demo_task_data(seed=0, cache_dir=tmp_path)
    assert [len(data.train), len(data.validation), len(data.test)] == [8454, 1057, 1057]
    assert data.label_names == ["negative", "positive"]
    assert (tmp_path / demo_data.VADER_SDIST).is_file()
    assert demo_data.load_movie_reviews(tmp_path) == (texts, labels)  # served from the parsed cache


@pytest.mark.parametrize("evil_level", ["outer", "inner"])
def test_a_link_in_the_archive_chain_cannot_reach_outside_the_cache(tmp_path, monkeypatch, evil_level):
    outside = tmp_path / "outside"
    outside.mkdir()
    # The member the loader extracts is a symlink pointing out of the cache, in the sdist or in the archive inside.
    if evil_level == "outer":
        sdist = _tar_with(tmp_path / "sdist.tar.gz", [_link(demo_data.INNER_ARCHIVE, tarfile.SYMTYPE,
                                                             str(outside / "inner.tar.gz"))])
    else:
        inner = _tar_with(tmp_path / "inner.tar.gz", [_link(demo_data.REVIEWS_FILE, tarfile.SYMTYPE, "/etc/passwd")])
        sdist = _tar_with(tmp_path / "sdist.tar.gz", [_file(demo_data.INNER_ARCHIVE, inner.read_bytes())])
    monkeypatch.setattr(demo_data, "fetch_vader_sdist", lambda cache_dir: sdist)
    cache = tmp_path / "cache"
    with pytest.raises(demo_data.UnsafeArchiveMember, match="not a regular file"):
        demo_data.load_movie_reviews(cache)
    assert not list(outside.iterdir())
    assert all(not p.is_symlink() for p in cache.rglob("*"))
