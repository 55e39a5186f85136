"""Untrusted checkpoints: pickle weights only with --allow-pickle, the checkpoint's own code only with
--trust-remote-code."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from autocompress.cli import build_parser
from autocompress.config import OPTIONS, merge_options, settings_from_options
from autocompress.errors import InputError
from autocompress.plugins.local_task import LocalTask
from autocompress.testing import write_tiny_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_tiny_task(root, 60)
    # The same weights in the pickle format only.
    shutil.copytree(root / "model", root / "pickled")
    torch.save(load_file(str(root / "model" / "model.safetensors")), root / "pickled" / "pytorch_model.bin")
    (root / "pickled" / "model.safetensors").unlink()
    return root


def _provider(task, model: str, *flags: str) -> LocalTask:
    """The local task exactly as ``autocompress search --model ... --data ... FLAGS`` builds it."""
    args = build_parser().parse_args(["search", "--model", str(task / model), "--data", str(task / "data.csv"),
                                      *flags])
    settings = settings_from_options(merge_options(None, {name: getattr(args, name) for name in OPTIONS}))
    return LocalTask(settings.task_options)


def test_pickle_weights_are_refused_by_default(task):
    with pytest.raises(InputError) as error:
        _provider(task, "pickled").validate()
    message = str(error.value)
    assert "pickle format (pytorch_model.bin)" in message and "--allow-pickle" in message


def test_pickle_weights_load_with_the_opt_in(task):
    provider = _provider(task, "pickled", "--allow-pickle")
    provider.validate()
    loaded = provider.load()
    expected = load_file(str(task / "model" / "model.safetensors"))
    state = loaded.teacher.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in expected.items() if name in state)
    reference = _provider(task, "model").load()
    batch = reference.tokenizer(["a great film", "dull and cold"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(loaded.teacher(**batch).logits, reference.teacher(**batch).logits)


def test_safetensors_are_preferred_even_with_the_opt_in(task, monkeypatch):
    import transformers

    seen = []
    original = transformers.AutoModelForSequenceClassification.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        lambda *a, **k: seen.append(k) or original(*a, **k))
    _provider(task, "model", "--allow-pickle").load()
    assert seen[0]["use_safetensors"] is True


@pytest.mark.parametrize("flags, trusted", [((), False), (("--trust-remote-code",), True)])
def test_remote_code_is_trusted_only_when_asked(task, monkeypatch, flags, trusted):
    import transformers

    calls = {}
    for cls in (transformers.AutoModelForSequenceClassification, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def recording(*args, _name=cls.__name__, _original=original, **kwargs):
            calls[_name] = kwargs
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)
    _provider(task, "model", *flags).load()
    assert set(calls) == {"AutoModelForSequenceClassification", "AutoTokenizer"}
    assert all(kwargs["trust_remote_code"] is trusted for kwargs in calls.values())
    assert all(kwargs["local_files_only"] is True for kwargs in calls.values())
