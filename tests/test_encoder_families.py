"""Encoder families beyond BERT, where their layout asks for care (every technique's contract checks also run
on a tiny model of each through ``autocompress.testing.FAMILIES``).

DeBERTa-v2/v3: disentangled attention's relative-position projections follow the heads that are kept.

The kit's DeBERTa family is v3-style (``share_att_key``: the query/key projections also project the
positions). DeBERTa-v2 proper has its own ``pos_key_proj`` / ``pos_query_proj``; here they must be cut to
the same heads, or the position scores no longer line up with the content scores.
"""

import torch

from autocompress.arch import adapter_for, get_module
from autocompress.plugin_manager import build_host
from autocompress.plugins.head_pruning import HeadPruning, prune_layer_heads
from autocompress.plugins.layer_drop import LayerDrop
from autocompress.technique import ModelAndTokenizer
from autocompress.testing import TechniqueContract, tiny_model, tiny_tokenizer, varied_inputs

UNSHARED = "deberta-v2-unshared"


class TestHeadPruningOnDebertaV2WithItsOwnPositionProjections(TechniqueContract):
    technique = HeadPruning
    families = (UNSHARED,)
    mild_config = {"fraction": 0.25}
    strong_config = {"fraction": 0.75, "scoring": "l1"}
    bad_configs = [{"fraction": 1.0}]


class TestLayerDropOnDebertaV2WithItsOwnPositionProjections(TechniqueContract):
    technique = LayerDrop
    families = (UNSHARED,)
    mild_config = {"keep_layers": 2}
    strong_config = {"keep_layers": 1}
    bad_configs = [{"keep_layers": 0}]


def test_the_adapter_names_the_position_projections_only_when_they_exist():
    host = build_host()
    shared = adapter_for(tiny_model("deberta-v2"), host.architectures)
    unshared = adapter_for(tiny_model(UNSHARED), host.architectures)
    assert shared.layer_paths(0).position_projections == ()
    assert [p.rsplit(".", 1)[1] for p in unshared.layer_paths(0).position_projections] == ["pos_key_proj",
                                                                                          "pos_query_proj"]


def test_cutting_heads_cuts_the_same_rows_of_the_position_projections():
    host = build_host()
    model = tiny_model(UNSHARED)
    adapter = adapter_for(model, host.architectures)
    paths, size = adapter.layer_paths(0), adapter.head_size()
    before = {p: get_module(model, p).weight.detach().clone() for p in paths.position_projections}
    prune_layer_heads(model, paths, [1, 3], size)
    rows = torch.cat([torch.arange(size, 2 * size), torch.arange(3 * size, 4 * size)])
    for path, weight in before.items():
        assert torch.equal(get_module(model, path).weight, weight[rows]), path
    assert get_module(model, paths.query.rpartition(".")[0]).num_attention_heads == 2
    assert torch.isfinite(model(**varied_inputs(128)).logits).all()


def test_head_pruning_refuses_mpnet_whose_position_bias_has_one_entry_per_head_for_all_layers():
    host = build_host()
    mpnet = ModelAndTokenizer(adapter_for(tiny_model("mpnet"), host.architectures), tiny_tokenizer())
    reason = HeadPruning.unsupported_reason_for(mpnet)
    assert reason is not None and "mpnet.encoder.relative_attention_bias" in reason
    bert = ModelAndTokenizer(adapter_for(tiny_model("bert"), host.architectures), tiny_tokenizer())
    assert HeadPruning.unsupported_reason_for(bert) is None
    # What the refusal prevents: fewer heads in one layer no longer match the shared bias table.
    model = tiny_model("mpnet")
    adapter = adapter_for(model, host.architectures)
    prune_layer_heads(model, adapter.layer_paths(0), [0, 1], adapter.head_size())
    try:
        model(**varied_inputs(128))
    except RuntimeError as exc:
        assert "size" in str(exc)
    else:
        raise AssertionError("an MPNet layer with fewer heads than the shared bias table ran")
