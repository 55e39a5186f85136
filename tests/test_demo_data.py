"""Demo data: SHA-256 check before use, extraction that cannot escape the cache, the real archive."""

import io
import tarfile

import pytest

from autocompress import demo_data
from autocompress.errors import DemoDataUnavailable


def _tar_with(tmp_path, members):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name, payload=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def test_a_wrong_archive_is_refused_with_both_hashes_and_the_manual_command(tmp_path, monkeypatch):
    def fake_download(directory):
        (directory / demo_data.VADER_SDIST).write_bytes(b"not the real archive")

    monkeypatch.setattr(demo_data, "_download", fake_download)
    with pytest.raises(DemoDataUnavailable) as error:
        demo_data.fetch_vader_sdist(tmp_path)
    message = str(error.value)
    assert demo_data.VADER_SHA256 in message and "SHA-256 mismatch" in message
    assert "pip download --no-deps --no-binary :all: vadersentiment==3.3.2" in message
    assert not (tmp_path / demo_data.VADER_SDIST).exists()


def test_a_cached_archive_with_a_wrong_hash_is_fetched_again(tmp_path, monkeypatch):
    (tmp_path / demo_data.VADER_SDIST).write_bytes(b"tampered")
    calls = []
    monkeypatch.setattr(demo_data, "_download", lambda directory: calls.append(directory))
    with pytest.raises(DemoDataUnavailable, match="did not produce"):
        demo_data.fetch_vader_sdist(tmp_path)
    assert calls


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil-absolute.txt"])
def test_members_that_would_escape_are_refused(tmp_path, name):
    archive = _tar_with(tmp_path, [_file(name)])
    target = tmp_path / "cache" / "inner"
    with tarfile.open(archive) as tar, pytest.raises(demo_data.UnsafeArchiveMember):
        demo_data.safe_extract_member(tar, name, target)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "evil.txt").exists()
    assert not list(tmp_path.rglob("evil*.txt"))


def test_links_are_refused(tmp_path):
    link = tarfile.TarInfo("data/link.txt")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path, [(link, None)])
    with tarfile.open(archive) as tar, pytest.raises(demo_data.UnsafeArchiveMember, match="not a regular file"):
        demo_data.safe_extract_member(tar, "data/link.txt", tmp_path / "out")


def test_a_regular_member_is_extracted_inside_the_target(tmp_path):
    archive = _tar_with(tmp_path, [_file("a/b.txt", b"hello")])
    with tarfile.open(archive) as tar:
        path = demo_data.safe_extract_member(tar, "a/b.txt", tmp_path / "out")
    assert path == (tmp_path / "out" / "a" / "b.txt").resolve() and path.read_bytes() == b"hello"


def test_parse_ground_truth_labels_by_sign_and_drops_zeros():
    texts, labels = demo_data.parse_ground_truth("1\t2.5\tgood film\n2\t-0.6\tdull\n3\t0\tmeh\n")
    assert texts == ["good film", "dull"] and labels == [1, 0]


@pytest.mark.slow
def test_the_real_archive_gives_the_documented_counts_and_splits(tmp_path):
    texts, labels = demo_data.load_movie_reviews(tmp_path)
    assert len(texts) == 10_568 and sum(labels) == 5_242
    data = demo_data.load_demo_task_data(seed=0, cache_dir=tmp_path)
    assert [len(data.train), len(data.validation), len(data.test)] == [8454, 1057, 1057]
    assert (tmp_path / demo_data.VADER_SDIST).is_file()
    assert demo_data.load_movie_reviews(tmp_path) == (texts, labels)  # served from the parsed cache
