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


# ModernBERT: one fused q/k/v linear (rows [q; k; v]), a fused gated-MLP input (rows [gate; in]), and a first
# layer built without an attention norm.

def _modernbert(layers: int = 3):
    host = build_host()
    model = tiny_model("modernbert", layers=layers)
    return model, adapter_for(model, host.architectures)


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_modernbert_heads_are_cut_in_each_block_of_the_fused_qkv_linear():
    model, adapter = _modernbert()
    size, inputs = adapter.head_size(), varied_inputs(128)
    for paths in adapter.all_layer_paths():  # head 1 writes nothing: removing it must change nothing
        with torch.no_grad():
            get_module(model, paths.attention_output).weight[:, size:2 * size] = 0
    before = _logits(model, inputs)
    fused = get_module(model, adapter.layer_paths(1).query).weight.detach().clone()
    for paths in adapter.all_layer_paths():
        prune_layer_heads(model, paths, [0, 2, 3], size)
    assert torch.equal(_logits(model, inputs), before)
    hidden = 4 * size
    kept = torch.cat([torch.arange(0, size), torch.arange(2 * size, 4 * size)])
    rows = torch.cat([kept + block * hidden for block in range(3)])  # the same heads of q, k and v
    assert torch.equal(get_module(model, adapter.layer_paths(1).query).weight, fused[rows])
    # Removing a head that does write something changes the outputs (the check above can fail).
    other, adapter = _modernbert()
    prune_layer_heads(other, adapter.layer_paths(1), [0, 1, 3], size)
    assert not torch.allclose(_logits(other, inputs), before)


def test_modernbert_ffn_neurons_are_cut_in_both_halves_of_the_fused_input_linear():
    from autocompress.arch import keep_ffn_neurons

    model, adapter = _modernbert()
    inputs = varied_inputs(128)
    paths = adapter.layer_paths(2)
    width = get_module(model, paths.ffn_out).in_features
    dead = torch.arange(0, width, 2)  # these neurons write nothing through the output linear
    with torch.no_grad():
        get_module(model, paths.ffn_out).weight[:, dead] = 0
    before = _logits(model, inputs)
    fused = get_module(model, paths.ffn_in).weight.detach().clone()
    alive = torch.arange(1, width, 2)
    keep_ffn_neurons(model, paths, alive)
    assert torch.equal(_logits(model, inputs), before)
    assert torch.equal(get_module(model, paths.ffn_in).weight, fused[torch.cat([alive, alive + width])])
    assert get_module(model, paths.ffn_out).in_features == width // 2


def test_modernbert_keeps_its_first_layer_when_layers_are_dropped(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from autocompress.plugins.layer_drop import keep_layers, positional_layers

    assert positional_layers(3, 2, "every_other") == [1, 2]  # what a family without a pinned layer keeps
    assert positional_layers(3, 2, "every_other", (0,)) == [0, 2]
    assert positional_layers(6, 3, "top", (0,)) == [0, 4, 5]
    assert positional_layers(6, 1, "top", (0,)) == [0]
    inputs = varied_inputs(128)

    def reloaded(indices, name):
        model, adapter = _modernbert()
        keep_layers(model, adapter, indices)
        model.save_pretrained(tmp_path / name)
        again = AutoModelForSequenceClassification.from_pretrained(tmp_path / name).eval()
        return model, again

    kept, again = reloaded([0, 2], "pinned")
    assert kept.config.layer_types == ["full_attention", "full_attention"]
    assert torch.equal(_logits(again, inputs), _logits(kept, inputs))
    # Why the first layer is pinned: a later layer moved to the front brings its attention norm, which the
    # family does not build at position 0, so the saved model no longer reloads as it was.
    moved, again = reloaded([1, 2], "moved")
    assert not torch.allclose(_logits(again, inputs), _logits(moved, inputs))


def test_layer_drop_by_importance_never_removes_a_pinned_layer():
    from autocompress.plugins.layer_drop import importance_layers

    model, adapter = _modernbert(layers=4)
    batches = [varied_inputs(128)]
    for keep in (1, 2, 3):
        kept = importance_layers(model, adapter, keep, batches)
        assert kept[0] == 0 and len(kept) == keep
