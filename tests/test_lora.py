"""lora against the contract kit, plus what it promises: adapters merged away, same shapes, reloadable.

Training (through merged adapters) changes no shape, so the contract's parameter/memory/latency
claims are off.
"""

import copy

import optuna
import pytest
import torch
from torch import nn

from autocompress import load_pretrained
from autocompress.arch import adapter_for, set_module
from autocompress.data import stratified_split
from autocompress.measure import dummy_inputs, parameter_count, thread_count
from autocompress.model_io import save_candidate
from autocompress.plugin_manager import build_host
from autocompress.plugins.lora import LoraRecovery, target_module_names
from autocompress.technique import ApplyContext
from autocompress.testing import TechniqueContract, synthetic_sentiment, tiny_model, tiny_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine it makes them far slower.
    with thread_count(1):
        yield


class TestLoraContract(TechniqueContract):
    technique = LoraRecovery
    mild_config = {"learning_rate": 1e-6, "epochs": 0.5}
    strong_config = {"learning_rate": 1e-2, "epochs": 2.0, "batch_size": 8, "targets": "both", "rank": 4}
    bad_configs = [{"rank": 0}, {"rank": 2.5}, {"alpha": 0}, {"dropout": 0.6}, {"targets": "mlp"},
                   {"distill": "yes"}, {"distill_alpha": 1.5}, {"learning_rate": -1.0}, {"r": 8}]
    # Adapters are merged into the existing weights: no shape changes, so nothing gets smaller or faster.
    reduces_parameters = False
    reduces_memory = False
    reduces_latency = False


def _context(model, tmp_path, teacher="copy", **kwargs) -> ApplyContext:
    texts, labels = synthetic_sentiment(96, seed=5)
    data = stratified_split(texts, [1 if label == "pos" else 0 for label in labels], ["neg", "pos"])
    return ApplyContext(adapter=adapter_for(model, build_host(autoload=False).architectures),
                        tokenizer=tiny_tokenizer(tmp_path / "tokenizer"), data=data, max_length=32,
                        teacher=copy.deepcopy(model) if teacher == "copy" else teacher, **kwargs)


def _lora(model, context, **values):
    return LoraRecovery().apply(model, LoraRecovery.make_config(values), context)


def _is_peft(module: nn.Module) -> bool:
    return type(module).__module__.startswith("peft")


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_returns_the_plain_model_with_adapters_merged(family, tmp_path):
    model = tiny_model(family)
    inputs = dummy_inputs(3, 10, 128)
    with torch.inference_mode():
        before = model(**inputs).logits
    count, model_class = parameter_count(model), type(model)
    state_keys = set(model.state_dict())
    trained = _lora(model, _context(model, tmp_path), learning_rate=1e-2, targets="both", epochs=2.0, batch_size=8)
    assert type(trained) is model_class
    assert not any(_is_peft(m) or "lora" in name for name, m in trained.named_modules())
    assert set(trained.state_dict()) == state_keys
    assert parameter_count(trained) == count
    assert all(p.requires_grad for p in trained.parameters())
    with torch.inference_mode():
        assert not torch.allclose(trained(**inputs).logits, before, atol=1e-4)

    directory = save_candidate(tmp_path / "saved", trained, tiny_tokenizer(tmp_path / "tok"), [])
    reloaded, _ = load_pretrained(directory)
    assert type(reloaded) is model_class
    with torch.inference_mode():
        assert torch.equal(reloaded(**inputs).logits, trained(**inputs).logits)


def test_targets_name_the_adapter_linears():
    model = tiny_model("bert", layers=2)
    adapter = adapter_for(model, build_host(autoload=False).architectures)
    attention = target_module_names(model, adapter, "attention")
    ffn = target_module_names(model, adapter, "ffn")
    assert len(attention) == 8 and all(".attention." in name for name in attention)
    assert ffn == [f"bert.encoder.layer.{i}.{part}.dense" for i in range(2) for part in ("intermediate", "output")]
    assert target_module_names(model, adapter, "both") == [
        *attention[:4], *ffn[:2], *attention[4:], *ffn[2:]]


def test_low_rank_linears_get_adapters_on_their_thin_halves(tmp_path):
    model = tiny_model("bert", layers=1)
    path = "bert.encoder.layer.0.attention.self.query"
    set_module(model, path, nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 64)))
    adapter = adapter_for(model, build_host(autoload=False).architectures)
    assert target_module_names(model, adapter, "attention")[:2] == [f"{path}.0", f"{path}.1"]
    query_before = copy.deepcopy(model.get_submodule(path))
    trained = _lora(model, _context(model, tmp_path), learning_rate=1e-2, epochs=2.0, batch_size=8)
    query = trained.get_submodule(path)
    assert isinstance(query, nn.Sequential) and [m.weight.shape for m in query] == [(8, 64), (64, 8)]
    assert not torch.equal(query[1].weight, query_before[1].weight)


def test_distill_needs_a_teacher_and_plain_training_does_not(tmp_path):
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="distill"):
        _lora(model, _context(model, tmp_path, teacher=None))
    trained = _lora(model, _context(model, tmp_path, teacher=None), distill=False, epochs=0.5)
    assert not any(_is_peft(m) for m in trained.modules())


def test_a_pruned_trial_leaves_no_adapters_behind(tmp_path):
    model = tiny_model("bert")
    count = parameter_count(model)

    def prune(step, value):
        raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        _lora(model, _context(model, tmp_path, report=prune), eval_every=1)
    assert not any(_is_peft(m) for m in model.modules())
    assert parameter_count(model) == count
    assert all(p.requires_grad for p in model.parameters())
