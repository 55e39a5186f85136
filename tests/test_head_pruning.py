"""Head pruning against the contract kit, plus what it specifically promises."""

import copy

import pytest
import torch

from autocompress import load_pretrained
from autocompress.arch import adapter_for
from autocompress.measure import dummy_inputs
from autocompress.model_io import save_candidate
from autocompress.plugin_manager import build_host
from autocompress.plugins.head_pruning import (
    HeadPruning,
    gradient_head_scores,
    heads_to_keep,
    l1_head_scores,
    normalise_per_layer,
)
from autocompress.testing import TechniqueContract, tiny_model
from autocompress.training import encode

HEAD_SIZE = 16  # tiny_model: hidden 64 / 4 heads


class TestHeadPruningContract(TechniqueContract):
    technique = HeadPruning
    mild_config = {"fraction": 0.25}  # gradient scoring, on the contract's synthetic data
    # The tiny ModernBERT's first layer (global attention straight off the embeddings' norm) leans on every
    # head: removing any one of its 4 moves the logits by 0.85-1.4% of the largest, against 0.2-0.3% for the
    # second layer's. Scores normalised per layer (Michel et al.) take one head from each layer: 2.2%. The
    # slicing itself is exact (test_encoder_families: a head with zero output removed, logits unchanged).
    mild_tolerance_for = {"modernbert": 0.03}
    strong_config = {"fraction": 0.75, "scoring": "l1"}
    bad_configs = [{"fraction": 1.0}, {"fraction": -0.1}, {"fraction": "half"}, {"scoring": "random"},
                   {"samples": 0}, {"samples": 2.5}, {"heads": 0.5}]


@pytest.fixture
def contract():
    return TestHeadPruningContract()


def zero_heads(model, dead: dict[int, list[int]]):
    """Zero the q/k/v rows and attention-output columns of the given heads (layer -> heads)."""
    adapter = adapter_for(model, build_host().architectures)
    with torch.no_grad():
        for layer, heads in dead.items():
            paths = adapter.layer_paths(layer)
            for head in heads:
                units = slice(head * HEAD_SIZE, (head + 1) * HEAD_SIZE)
                for path in (paths.query, paths.key, paths.value):
                    model.get_submodule(path).weight[units] = 0
                model.get_submodule(paths.attention_output).weight[:, units] = 0
    return model


def q_widths(model, family: str) -> list[int]:
    if family == "bert":
        return [layer.attention.self.query.out_features for layer in model.bert.encoder.layer]
    return [layer.attention.q_lin.out_features for layer in model.distilbert.transformer.layer]


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_l1_removes_exactly_the_zeroed_heads_and_outputs_do_not_change(contract, family, tmp_path):
    model = zero_heads(tiny_model(family), {0: [1, 3], 1: [2]})
    inputs = dummy_inputs(2, 12, 128)
    with torch.inference_mode():
        before = model(**inputs).logits
    adapter = contract.context(model, tmp_path).adapter
    keep = heads_to_keep(normalise_per_layer(l1_head_scores(model, adapter)), 3 / 8)
    assert keep == [[0, 2], [0, 1, 3]]
    pruned, _ = contract.apply(copy.deepcopy(model), {"fraction": 3 / 8, "scoring": "l1"}, tmp_path)
    assert q_widths(pruned, family) == [2 * HEAD_SIZE, 3 * HEAD_SIZE]
    with torch.inference_mode():
        assert torch.allclose(pruned(**inputs).logits, before, atol=1e-5)


def test_kept_heads_keep_their_weights(contract, tmp_path):
    model = zero_heads(tiny_model("bert"), {0: [1, 3], 1: [2]})
    original = model.bert.encoder.layer[1].attention.self.value.weight.detach().clone()
    original_out = model.bert.encoder.layer[1].attention.output.dense.weight.detach().clone()
    pruned, _ = contract.apply(model, {"fraction": 3 / 8, "scoring": "l1"}, tmp_path)
    rows = torch.cat([torch.arange(h * HEAD_SIZE, (h + 1) * HEAD_SIZE) for h in (0, 1, 3)])
    layer = pruned.bert.encoder.layer[1]
    assert torch.equal(layer.attention.self.value.weight, original[rows])
    assert torch.equal(layer.attention.output.dense.weight, original_out[:, rows])


def test_head_attributes_follow_the_kept_heads(contract, tmp_path):
    bert, _ = contract.apply(zero_heads(tiny_model("bert"), {0: [1, 3], 1: [2]}),
                             {"fraction": 3 / 8, "scoring": "l1"}, tmp_path)
    attention = bert.bert.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.all_head_size) == (2, 2 * HEAD_SIZE)
    assert bert.config.num_attention_heads == 4  # the config's head count sets the head size: unchanged
    distil, _ = contract.apply(zero_heads(tiny_model("distilbert"), {1: [0]}),
                               {"fraction": 1 / 8, "scoring": "l1"}, tmp_path)
    assert [layer.attention.n_heads for layer in distil.distilbert.transformer.layer] == [4, 3]


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_every_layer_keeps_a_head_even_at_fraction_095(contract, family, tmp_path):
    pruned, _ = contract.apply(tiny_model(family), {"fraction": 0.95, "scoring": "l1"}, tmp_path)
    assert q_widths(pruned, family) == [HEAD_SIZE, HEAD_SIZE]
    with torch.inference_mode():
        assert pruned(**dummy_inputs(2, 8, 128)).logits.shape == (2, 2)


def test_heads_to_keep_removes_globally_lowest_and_skips_a_layers_last_head():
    scores = torch.tensor([[0.1, 0.2, 0.9], [0.3, 0.05, 0.8]])
    assert heads_to_keep(scores, 0.5) == [[2], [0, 2]]  # removes 0.05, 0.1, 0.2
    assert heads_to_keep(scores, 0.99) == [[2], [2]]  # 6 asked, 4 possible
    assert heads_to_keep(scores, 0.0) == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_per_layer_head_counts_survive_save_and_reload(contract, family, tmp_path):
    model = zero_heads(tiny_model(family), {0: [0, 1, 2], 1: [3]})
    pruned, context = contract.apply(model, {"fraction": 0.5, "scoring": "l1"}, tmp_path)
    assert q_widths(pruned, family) == [HEAD_SIZE, 3 * HEAD_SIZE]
    directory = save_candidate(tmp_path / "saved", pruned, context.tokenizer, [])
    reloaded, _ = load_pretrained(directory)
    assert q_widths(reloaded, family) == [HEAD_SIZE, 3 * HEAD_SIZE]
    inputs = dummy_inputs(3, 10, 128)
    with torch.inference_mode():
        assert torch.equal(pruned(**inputs).logits, reloaded(**inputs).logits)


def test_gradient_scoring_uses_the_task_data_and_differs_from_l1(contract, tmp_path):
    model = tiny_model("bert")
    context = contract.context(model, tmp_path)
    gradient = HeadPruning().score(model, HeadPruning.make_config({"samples": 24}), context)
    l1 = HeadPruning().score(model, HeadPruning.make_config({"scoring": "l1"}), context)
    assert gradient.shape == l1.shape == (2, 4)
    assert torch.isfinite(gradient).all() and (gradient > 0).all()
    assert torch.allclose(gradient.norm(dim=1), torch.ones(2))  # normalised per layer
    assert not torch.allclose(gradient, l1, atol=1e-3)
    assert model.training is False


def test_gradient_scores_are_per_example_absolute_gradients(contract, tmp_path):
    """One backward per batch with a per-example mask equals scoring each example on its own."""
    model = tiny_model("bert")
    context = contract.context(model, tmp_path)
    encoded = encode(context.tokenizer, context.data.train, 32)
    adapter = context.adapter
    batched = gradient_head_scores(model, adapter, encoded, 8)
    one_by_one = gradient_head_scores(model, adapter, encoded, 1)
    assert torch.allclose(batched, one_by_one, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())  # only the mask was differentiated


def test_gradient_scoring_without_data_is_refused(contract, tmp_path):
    model = tiny_model("bert")
    context = contract.context(model, tmp_path)
    context.data = None
    with pytest.raises(ValueError, match="scoring='l1'"):
        HeadPruning().apply(model, HeadPruning.make_config({"fraction": 0.5}), context)
    pruned = HeadPruning().apply(model, HeadPruning.make_config({"fraction": 0.5, "scoring": "l1"}), context)
    assert sum(q_widths(pruned, "bert")) == 4 * HEAD_SIZE
