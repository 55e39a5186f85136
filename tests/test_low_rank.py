"""Low-rank factorisation against the contract kit, plus what it specifically promises."""

import copy

import pytest
import torch
from torch import nn

from autocompress.measure import dummy_inputs
from autocompress.plugins.low_rank import LowRank, LowRankConfig, choose_rank, factorise_linear, saves_work
from autocompress.testing import TechniqueContract, tiny_model


class TestLowRankContract(TechniqueContract):
    technique = LowRank
    mild_config = {"rank_ratio": 0.5}  # FFN only: 128x64 at rank 32
    strong_config = {"rank_ratio": 0.25, "layers": "both"}
    bad_configs = [{"rank_ratio": 0.0}, {"rank_ratio": 1.5}, {"rank_ratio": "half"}, {"energy": 0.0},
                   {"energy": 1.5}, {"layers": "all"}, {"rank": 8}]


@pytest.fixture
def contract():
    return TestLowRankContract()


def bert_linears(model) -> dict[str, nn.Module]:
    layer = model.bert.encoder.layer[0]
    return {"query": layer.attention.self.query, "attention_output": layer.attention.output.dense,
            "ffn_in": layer.intermediate.dense, "ffn_out": layer.output.dense}


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_full_rank_factorisation_reproduces_outputs(contract, family, tmp_path):
    model = tiny_model(family)
    inputs = dummy_inputs(2, 12, 128)
    with torch.inference_mode():
        before = model(**inputs).logits
    adapter = contract.context(model, tmp_path).adapter
    for paths in adapter.all_layer_paths():
        for path in (paths.query, paths.key, paths.value, paths.attention_output, paths.ffn_in, paths.ffn_out):
            linear = model.get_submodule(path)
            factorised = factorise_linear(linear, min(linear.weight.shape))
            parent, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent), name, factorised)
    assert sum(isinstance(m, nn.Sequential) for m in model.modules()) == 12
    with torch.inference_mode():
        assert torch.allclose(model(**inputs).logits, before, atol=1e-4)


def test_factors_have_the_reloadable_form():
    linear = nn.Linear(64, 128)
    factorised = factorise_linear(linear, 24)
    first, second = factorised
    assert (first.in_features, first.out_features, first.bias) == (64, 24, None)
    assert (second.in_features, second.out_features) == (24, 128)
    assert torch.equal(second.bias, linear.bias)
    u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
    best = (u[:, :24] * s[:24]) @ vh[:24]  # Eckart-Young: the best rank-24 approximation
    assert torch.allclose((second.weight @ first.weight).double(), best, atol=1e-6)


def test_rank_from_ratio_is_rounded_up_to_a_multiple_of_8():
    singular = torch.linspace(1, 0.1, 64)
    assert choose_rank(singular, LowRankConfig(rank_ratio=0.25)) == 16
    assert choose_rank(singular, LowRankConfig(rank_ratio=0.3)) == 24  # ceil(19.2) = 20 -> 24
    assert choose_rank(torch.ones(5), LowRankConfig(rank_ratio=0.5)) == 5  # capped at the full rank


def test_energy_picks_a_smaller_rank_for_a_lower_energy():
    weight = tiny_model("bert").bert.encoder.layer[0].intermediate.dense.weight.detach()
    singular = torch.linalg.svdvals(weight.double())
    ranks = [choose_rank(singular, LowRankConfig(energy=e)) for e in (0.3, 0.6, 0.9, 1.0)]
    assert ranks == sorted(ranks) and ranks[0] < ranks[2]
    assert ranks[-1] == 64
    squared = singular**2
    kept = squared[: ranks[1]].sum() / squared.sum()
    assert kept >= 0.6  # the chosen rank keeps at least the asked energy
    assert choose_rank(singular, LowRankConfig(rank_ratio=1.0, energy=0.3)) == ranks[0]  # energy overrides


def test_energy_sets_the_factor_width_in_the_model(contract, tmp_path):
    model = tiny_model("bert")
    singular = torch.linalg.svdvals(model.bert.encoder.layer[0].intermediate.dense.weight.detach().double())
    expected = choose_rank(singular, LowRankConfig(energy=0.3))
    compressed, _ = contract.apply(model, {"energy": 0.3}, tmp_path)
    assert compressed.bert.encoder.layer[0].intermediate.dense[0].out_features == expected


def test_layers_choose_which_linears_are_factorised(contract, tmp_path):
    ffn, _ = contract.apply(tiny_model("bert"), {"rank_ratio": 0.25, "layers": "ffn"}, tmp_path)
    kinds = {name: type(m) for name, m in bert_linears(ffn).items()}
    assert kinds == {"query": nn.Linear, "attention_output": nn.Linear,
                     "ffn_in": nn.Sequential, "ffn_out": nn.Sequential}
    attention, _ = contract.apply(tiny_model("bert"), {"rank_ratio": 0.25, "layers": "attention"}, tmp_path)
    kinds = {name: type(m) for name, m in bert_linears(attention).items()}
    assert kinds == {"query": nn.Sequential, "attention_output": nn.Sequential,
                     "ffn_in": nn.Linear, "ffn_out": nn.Linear}


def test_layers_without_a_saving_are_left_untouched(contract, tmp_path):
    assert not saves_work(32, 64, 64)  # 32 * (64 + 64) == 64 * 64: no saving, so skipped
    assert saves_work(24, 64, 64)
    model = tiny_model("bert")
    inputs = dummy_inputs(2, 8, 128)
    with torch.inference_mode():
        before = model(**inputs).logits
    # Rank 32 saves work on the 128x64 FFN linears but not on the 64x64 attention ones.
    compressed, _ = contract.apply(copy.deepcopy(model), {"rank_ratio": 0.5, "layers": "both"}, tmp_path)
    kinds = {name: type(m) for name, m in bert_linears(compressed).items()}
    assert kinds == {"query": nn.Linear, "attention_output": nn.Linear,
                     "ffn_in": nn.Sequential, "ffn_out": nn.Sequential}
    untouched, _ = contract.apply(copy.deepcopy(model), {"rank_ratio": 1.0, "layers": "both"}, tmp_path)
    assert not any(isinstance(m, nn.Sequential) for m in untouched.modules())
    with torch.inference_mode():
        assert torch.equal(untouched(**inputs).logits, before)


def test_applying_twice_leaves_factorised_linears_alone(contract, tmp_path):
    once, _ = contract.apply(tiny_model("bert"), {"rank_ratio": 0.25}, tmp_path)
    shapes = {k: tuple(v.shape) for k, v in once.state_dict().items()}
    twice, _ = contract.apply(once, {"rank_ratio": 0.25}, tmp_path)
    assert {k: tuple(v.shape) for k, v in twice.state_dict().items()} == shapes
