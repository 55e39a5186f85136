"""Hugging Face Hub ids, resolved from a local cache in the Hub's own layout; nothing contacts a hub."""

import json

import pytest

from autocompress.cli import main
from autocompress.config import load_config_file
from autocompress.errors import InputError
from autocompress.hub import hub_cache_dir, looks_like_hub_id, resolve_model
from autocompress.testing import populate_hub_cache, write_tiny_task


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """An empty Hugging Face home, offline: the cache is whatever a test puts there."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf-home"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_task(tmp_path_factory.mktemp("hub-task"), 120, seed=2)


def test_a_hub_id_is_resolved_from_the_populated_cache_and_searched(tiny, hub_home, tmp_path, capsys):
    snapshot = populate_hub_cache(hub_cache_dir(), "tiny-org/tiny-sentiment", tiny / "model")
    assert snapshot.is_relative_to(hub_home / "hub")
    assert (hub_home / "hub" / "models--tiny-org--tiny-sentiment" / "refs" / "main").read_text() == snapshot.name
    out = tmp_path / "run"
    assert main(["search", "--model", "tiny-org/tiny-sentiment", "--data", str(tiny / "data.csv"), "--trials", "1",
                 "--techniques", "quantization", "--out", str(out), "--repeats", "3", "--warmup", "1",
                 "--no-progress", "--max-accuracy-drop", "0.5"]) == 0
    info = json.loads((out / "run.json").read_text())["task_info"]
    assert info["base_model"] == "tiny-org/tiny-sentiment"
    assert info["model_source"] == f"tiny-org/tiny-sentiment (Hugging Face cache, revision {snapshot.name[:12]})"


def test_an_uncached_hub_id_exits_2_saying_how_to_download_it(tiny, hub_home, tmp_path, capsys):
    assert main(["search", "--model", "tiny-org/not-downloaded", "--data", str(tiny / "data.csv"),
                 "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    for fragment in ("--model tiny-org/not-downloaded", "not in the local cache", str(hub_home / "hub"),
                     "hf download tiny-org/not-downloaded", "huggingface-cli download tiny-org/not-downloaded",
                     "models--tiny-org--not-downloaded"):
        assert fragment in error, fragment
    assert not (tmp_path / "run").exists()


def test_a_local_directory_keeps_priority_over_a_hub_id_of_the_same_spelling(tiny, hub_home, tmp_path, monkeypatch):
    populate_hub_cache(hub_cache_dir(), "tiny-org/tiny-sentiment", tiny / "model")
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "tiny-org" / "tiny-sentiment"
    local.mkdir(parents=True)
    resolved = resolve_model("tiny-org/tiny-sentiment")
    assert resolved.directory.resolve() == local.resolve() and resolved.hub_id is None


def test_hub_cache_location_follows_the_environment_as_huggingface_hub_does(tmp_path, monkeypatch):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_what_reads_as_a_hub_id():
    for text in ("distilbert-base-uncased-finetuned-sst-2-english", "org/name", "Org_1/name.v2"):
        assert looks_like_hub_id(text), text
    for text in ("./model", "/abs/model", "a/b/c", "org--x/name", "org/na..me", "", "name.", "-x/y"):
        assert not looks_like_hub_id(text), text
    with pytest.raises(InputError, match="--model ./missing-model: directory not found"):
        resolve_model("./missing-model")


def test_a_hub_id_in_a_config_file_stays_a_hub_id_and_a_relative_folder_is_relative_to_the_file(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    config = tmp_path / "run.yaml"
    config.write_text("model: distilbert-base-uncased-finetuned-sst-2-english\n")
    assert load_config_file(config)["model"] == "distilbert-base-uncased-finetuned-sst-2-english"
    config.write_text("model: models/mine\n")
    assert load_config_file(config)["model"] == str(tmp_path / "models" / "mine")
