"""layer_drop against the contract kit, plus which layers each strategy keeps and plain reloading."""

import copy

import pytest
import torch

from autocompress.arch import adapter_for
from autocompress.measure import dummy_inputs, thread_count
from autocompress.model_io import save_candidate
from autocompress.plugin_manager import build_host
from autocompress.plugins.layer_drop import LayerDrop, positional_layers
from autocompress.technique import ApplyContext
from autocompress.testing import TechniqueContract, tiny_model, tiny_tokenizer

LAYER_LISTS = {"bert": "bert.encoder.layer", "distilbert": "distilbert.transformer.layer"}
LAYER_COUNTS = {"bert": "num_hidden_layers", "distilbert": "n_layers"}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine it makes them far slower.
    with thread_count(1):
        yield


class TestLayerDropContract(TechniqueContract):
    technique = LayerDrop
    # The tiny models have 2 layers: keeping both is the only mild setting (which layer the
    # importance strategy drops is checked below, on 6-layer models).
    mild_config = {"keep_layers": 2, "strategy": "importance"}
    mild_tolerance = 0.0
    strong_config = {"keep_layers": 1}
    bad_configs = [{"keep_layers": 0}, {"keep_layers": 2.5}, {"strategy": "random"}, {"layers": 2}]


def _drop(model, tmp_path, **values):
    """The student and the context it was built in."""
    return TestLayerDropContract().apply(model, values, tmp_path)


def _silence_residual_branches(model, layers: list[int]) -> None:
    """Zero the attention/FFN output linears of ``layers``: each becomes LayerNorm(LayerNorm(x)) ~ identity."""
    adapter = adapter_for(model, build_host().architectures)
    for index in layers:
        paths = adapter.layer_paths(index)
        for path in (paths.attention_output, paths.ffn_out):
            linear = adapter.linear(path)
            with torch.no_grad():
                linear.weight.zero_()
                linear.bias.zero_()


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("strategy, expected", [
    ("every_other", [1, 3, 5]), ("top", [3, 4, 5]), ("bottom", [0, 1, 2]), ("importance", [0, 2, 5]),
])
def test_keeps_exactly_the_chosen_teacher_layers(tmp_path, family, strategy, expected):
    teacher = tiny_model(family, layers=6)
    _silence_residual_branches(teacher, [1, 3, 4])  # the least important layers by construction
    student, context = _drop(copy.deepcopy(teacher), tmp_path, keep_layers=3, strategy=strategy)
    assert context.layer_origin == expected
    teacher_layers = teacher.get_submodule(LAYER_LISTS[family])
    student_layers = student.get_submodule(LAYER_LISTS[family])
    assert len(student_layers) == 3
    assert getattr(student.config, LAYER_COUNTS[family]) == 3
    for position, index in enumerate(expected):
        kept, original = student_layers[position].state_dict(), teacher_layers[index].state_dict()
        assert kept.keys() == original.keys()
        assert all(torch.equal(kept[name], original[name]) for name in kept), (position, index)


def test_every_other_is_evenly_spaced_and_keeps_the_last_layer():
    assert positional_layers(6, 3, "every_other") == [1, 3, 5]
    assert positional_layers(12, 6, "every_other") == [1, 3, 5, 7, 9, 11]
    assert positional_layers(6, 1, "every_other") == [5]
    for n in range(1, 13):
        for k in range(1, n + 1):
            kept = positional_layers(n, k, "every_other")
            assert len(set(kept)) == k and kept[-1] == n - 1 and kept == sorted(kept)


def test_layer_indices_follow_the_new_order(tmp_path):
    student, _ = _drop(tiny_model("bert", layers=4), tmp_path, keep_layers=2, strategy="top")
    for position, layer in enumerate(student.bert.encoder.layer):
        assert layer.attention.self.layer_idx == position


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_plain_transformers_reloads_the_result(tmp_path, family):
    from transformers import AutoModelForSequenceClassification

    student, _ = _drop(tiny_model(family, layers=4), tmp_path, keep_layers=2)
    inputs = dummy_inputs(2, 9, 128)
    student.save_pretrained(tmp_path / "hf")
    save_candidate(tmp_path / "candidate", student, tiny_tokenizer(tmp_path / "tokenizer"), [])
    with torch.inference_mode():
        expected = student(**inputs).logits
        for directory in (tmp_path / "hf", tmp_path / "candidate"):
            reloaded = AutoModelForSequenceClassification.from_pretrained(directory).eval()
            assert len(reloaded.get_submodule(LAYER_LISTS[family])) == 2
            assert torch.equal(reloaded(**inputs).logits, expected), directory


def test_keeping_all_layers_or_more_changes_nothing(tmp_path):
    model = tiny_model("bert", layers=3)
    layers = list(model.bert.encoder.layer)
    student, context = _drop(model, tmp_path, keep_layers=5)
    assert student is model and context.layer_origin is None
    assert list(model.bert.encoder.layer) == layers and model.config.num_hidden_layers == 3


def test_importance_without_data_falls_back_to_every_other_with_a_warning():
    teacher = tiny_model("bert", layers=6)
    student = copy.deepcopy(teacher)
    context = ApplyContext(adapter=adapter_for(student, build_host().architectures), tokenizer=None)
    config = LayerDrop.make_config({"keep_layers": 2, "strategy": "importance"})
    with pytest.warns(UserWarning, match="every_other"):
        student = LayerDrop().apply(student, config, context)
    kept = student.bert.encoder.layer[0].output.dense.weight
    assert torch.equal(kept, teacher.bert.encoder.layer[2].output.dense.weight)  # every_other(6, 2) = [2, 5]


def test_importance_on_a_causal_lm_finds_the_layers_that_leave_their_input_as_it_was_and_never_runs_the_head(tmp_path):
    """A decoder layer whose attention and MLP write nothing to the residual stream is the identity:
    importance removes those first. Each removal is one forward pass per batch, stopped after the last
    layer: the vocabulary projection (most of a small LLM's cost per token) never runs."""
    from transformers import AutoModelForCausalLM

    from autocompress.plugins.layer_drop import importance_layers
    from autocompress.testing import varied_inputs, write_tiny_causal_lm

    model = AutoModelForCausalLM.from_pretrained(write_tiny_causal_lm(tmp_path / 'lm', layers=6)).eval()
    adapter = adapter_for(model, build_host().architectures)
    for index in (1, 2, 4):
        paths = adapter.layer_paths(index)
        with torch.no_grad():
            for path in (paths.attention_output, paths.ffn_out):
                adapter.linear(path).weight.zero_()
    calls = {"head": 0, "layer 0": 0}
    model.lm_head.register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1))
    model.model.layers[0].register_forward_hook(lambda *_: calls.__setitem__("layer 0", calls["layer 0"] + 1))
    batches = [varied_inputs(model.config.vocab_size, seed=seed) for seed in (0, 1)]
    assert importance_layers(model, adapter, 3, batches) == [0, 3, 5]
    assert calls == {"head": 0, "layer 0": 3 * 2}  # three removals, two batches each
    assert len(model.model.layers) == 6  # left whole

