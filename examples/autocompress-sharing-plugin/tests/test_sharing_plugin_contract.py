"""ffn_sharing against autocompress's technique contract kit, plus what sharing specifically promises."""

import copy

import pytest
import torch
from autocompress_sharing_plugin import ffn_sharing
from autocompress_sharing_plugin.ffn_sharing import FfnSharing

from autocompress.measure import model_bytes, parameter_count
from autocompress.testing import TechniqueContract, tiny_model

FFN = {"bert": ("bert.encoder.layer", "intermediate.dense", "output.dense"),
       "distilbert": ("distilbert.transformer.layer", "ffn.lin1", "ffn.lin2")}


class TestFfnSharing(TechniqueContract):
    technique = FfnSharing
    plugin = ffn_sharing
    mild_config = {"group_size": 2}
    # Groups of 2 is the mildest; measured 0.002-0.013 of the largest logit, 0.077 on ELECTRA.
    mild_tolerance = 0.08
    strong_config = {"group_size": 2}
    bad_configs = [{"group_size": 0}, {"group_size": 2.5}, {"group_size": True}, {"groups": 2}]
    reduces_latency = False  # every layer still runs its (shared) FFN


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_groups_share_the_first_layers_ffn_and_count_it_once(tmp_path, family):
    model = tiny_model(family, layers=5, ffn=128)
    shared, _ = TestFfnSharing().apply(copy.deepcopy(model), {"group_size": 2}, tmp_path)
    path, ffn_in, ffn_out = FFN[family]
    layers = shared.get_submodule(path)
    for owner, member in ((0, 1), (2, 3)):
        for part in (ffn_in, ffn_out):
            assert layers[member].get_submodule(part) is layers[owner].get_submodule(part)
    assert layers[4].get_submodule(ffn_in) is not layers[2].get_submodule(ffn_in)  # a group of one: its own
    attention = "attention.self.query" if family == "bert" else "attention.q_lin"
    assert layers[1].get_submodule(attention) is not layers[0].get_submodule(attention)  # attention stays per layer
    one_ffn = sum(p.numel() for part in (ffn_in, ffn_out) for p in layers[0].get_submodule(part).parameters())
    assert parameter_count(model) - parameter_count(shared) == 2 * one_ffn
    assert model_bytes(model) - model_bytes(shared) == 2 * one_ffn * 4
    original = model.get_submodule(path)[0].get_submodule(ffn_in).weight
    assert torch.equal(layers[1].get_submodule(ffn_in).weight, original)  # the group runs the first layer's FFN
