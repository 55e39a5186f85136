"""GPT-2 (``GPT2Adapter``): its ``Conv1D`` projections become exact ``nn.Linear``s, heads are cut in each block
of the fused ``c_attn``, a compressed GPT-2 reloads as itself, and a GPT-2 causal LM becomes a prompted
classifier (every technique's contract checks also run on a tiny GPT-2: ``autocompress.testing.FAMILIES``)."""

import pytest
import torch
from torch import nn

from autocompress.arch import GPT2Adapter, adapter_for, conv1d_to_linear, get_module, replace_sliced
from autocompress.candidate import apply_steps
from autocompress.model_io import load_pretrained, loads_with_plain_transformers, save_candidate
from autocompress.plugin_manager import build_host
from autocompress.plugins.ffn_pruning import FfnPruning
from autocompress.plugins.head_pruning import HeadPruning, prune_layer_heads
from autocompress.plugins.layer_drop import LayerDrop
from autocompress.prompted import Prompt, label_token_ids, prompted_classifier
from autocompress.technique import ApplyContext, PlanStep
from autocompress.testing import tiny_model, tiny_tokenizer, varied_inputs, write_tiny_causal_lm


@pytest.fixture(scope="module")
def host():
    return build_host()


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _conv1d_count(model):
    from transformers.pytorch_utils import Conv1D

    return sum(isinstance(module, Conv1D) for module in model.modules())


def test_the_adapter_makes_every_conv1d_an_exact_linear(host):
    model, inputs = tiny_model("gpt2"), varied_inputs(128)
    before = _logits(model, inputs)
    conv = model.transformer.h[0].attn.c_attn
    weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
    assert _conv1d_count(model) == 8  # c_attn, c_proj, c_fc, c_proj in each of 2 blocks
    adapter = adapter_for(model, host.architectures)
    assert isinstance(adapter, GPT2Adapter) and adapter.causal
    assert _conv1d_count(model) == 0
    linear = model.transformer.h[0].attn.c_attn
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (64, 192)
    assert torch.equal(linear.weight, weight.t()) and torch.equal(linear.bias, bias)
    assert torch.equal(_logits(model, inputs), before)
    assert conv1d_to_linear(model) == 0  # a standardised model is left as it is
    paths = adapter.layer_paths(1)
    assert paths.fused_qkv and paths.attention_linears == ("transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj")
    assert all(isinstance(get_module(model, path), nn.Linear) for path in (*paths.attention_linears, *paths.ffn_inputs,
                                                                          paths.ffn_out))
    assert adapter.head_size() == 16 and adapter.key_value_heads() is None
    assert adapter.word_embeddings_path() == "transformer.wte" and adapter.num_layers() == 2


def test_the_shared_surgery_refuses_a_conv1d_it_would_slice_the_wrong_way(host):
    paths = adapter_for(tiny_model("gpt2"), host.architectures).layer_paths(0)
    raw = tiny_model("gpt2")  # no adapter made for this one: its projections are still Conv1D
    with pytest.raises(TypeError, match="nn.Linear at transformer.h.0.attn.c_attn, found Conv1D"):
        prune_layer_heads(raw, paths, [0, 1], 16)
    with pytest.raises(TypeError, match="slice a Conv1D"):
        replace_sliced(raw, paths.ffn_out, keep_in=[0, 1])


def test_gpt2_heads_are_cut_in_each_block_of_c_attn_and_the_attention_splits_at_the_new_width(host):
    model = tiny_model("gpt2")
    adapter = adapter_for(model, host.architectures)
    size, inputs = adapter.head_size(), varied_inputs(128)
    for paths in adapter.all_layer_paths():  # head 1 writes nothing: removing it must change nothing
        with torch.no_grad():
            get_module(model, paths.attention_output).weight[:, size:2 * size] = 0
    before = _logits(model, inputs)
    fused = get_module(model, adapter.layer_paths(1).query).weight.detach().clone()
    for paths in adapter.all_layer_paths():
        prune_layer_heads(model, paths, [0, 2, 3], size)
    assert torch.equal(_logits(model, inputs), before)
    kept = torch.cat([torch.arange(0, size), torch.arange(2 * size, 4 * size)])
    rows = torch.cat([kept + block * 4 * size for block in range(3)])  # the same heads of q, k and v
    assert torch.equal(get_module(model, adapter.layer_paths(1).query).weight, fused[rows])
    attention = model.transformer.h[1].attn
    assert (attention.num_heads, attention.split_size, attention.head_dim) == (3, 3 * size, size)
    # Removing a head that does write something changes the outputs (the check above can fail).
    other = tiny_model("gpt2")
    prune_layer_heads(other, adapter_for(other, host.architectures).layer_paths(1), [0, 1, 3], size)
    assert not torch.allclose(_logits(other, inputs), before)


def test_a_compressed_gpt2_saves_and_reloads_as_itself(host, tmp_path):
    model = tiny_model("gpt2", layers=3)
    context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=tiny_tokenizer(tmp_path / "tok"))
    steps = [PlanStep(LayerDrop, LayerDrop.make_config({"keep_layers": 2, "strategy": "every_other"})),
             PlanStep(HeadPruning, HeadPruning.make_config({"fraction": 0.5, "scoring": "l1"})),
             PlanStep(FfnPruning, FfnPruning.make_config({"keep_fraction": 0.5}))]
    model = apply_steps(model, steps, context)
    inputs = varied_inputs(128)
    expected = _logits(model, inputs)
    directory = save_candidate(tmp_path / "saved", model, context.tokenizer, [])
    # Saved in nn.Linear layout (out, in), which GPT-2's own Conv1D (in, out) would read transposed.
    assert not loads_with_plain_transformers(directory)
    loaded, _ = load_pretrained(directory, host.techniques, host.architectures)
    assert type(loaded).__name__ == "GPT2ForSequenceClassification" and _conv1d_count(loaded) == 0
    assert len(loaded.transformer.h) == 2 and loaded.transformer.h[0].attn.split_size == 2 * 16
    assert loaded.config.n_inner == 64 and loaded.config.n_layer == 2
    assert torch.equal(_logits(loaded, inputs), expected)


def test_a_gpt2_causal_lm_is_a_prompted_classifier_even_without_a_padding_token(host, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = write_tiny_causal_lm(tmp_path / "gpt2", family="gpt2", layers=2)
    lm, tokenizer = AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    tokenizer.pad_token = None  # as GPT-2's own tokenizer: the end-of-sequence token pads
    prompt = Prompt("Review: {text}\nSentiment:", (" bad", " good"))
    classifier = prompted_classifier(lm, tokenizer, ["neg", "pos"], prompt)
    assert type(classifier).__name__ == "GPT2ForSequenceClassification"
    assert classifier.config.pad_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id
    adapter_for(classifier, host.architectures)  # standardised, as the search does first
    texts = [prompt.render(t) for t in ["the film was good", "a dull and very boring plot it was", "fun"]]
    # GPT-2's tokenizer adds no special tokens; padding (the end-of-sequence token) goes on the right.
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids = label_token_ids(tokenizer, [" bad", " good"])
    with torch.no_grad():
        got = classifier(**batch).logits
        for row, text in enumerate(texts):  # each prompt alone, unpadded, through the causal LM
            alone = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            torch.testing.assert_close(got[row], lm(**alone).logits[0, -1, ids], rtol=1e-4, atol=1e-5)
    assert classifier.score.weight.shape == (2, 64)


def test_a_pruned_int8_gpt2_exports_to_onnx_runtime_int8_kernels(host, tmp_path):
    pytest.importorskip("onnxruntime")
    from collections import Counter

    import onnx

    from autocompress.onnx_export import compare_with_torch, export_onnx, input_names
    from autocompress.plugins.quantization import quantize_int8_dynamic

    model = tiny_model("gpt2")
    adapter = adapter_for(model, host.architectures)
    for paths in adapter.all_layer_paths():
        prune_layer_heads(model, paths, [0, 3], adapter.head_size())
    # GPT-2's forward takes token types but adds their word-embedding rows: zeros are not 'none', so
    # the graph does not take them (BERT's, whose config declares token types, does).
    assert input_names(model) == ["input_ids", "attention_mask"]
    assert "token_type_ids" in input_names(tiny_model("bert"))
    inputs = varied_inputs(128)
    float_path = export_onnx(model, tmp_path / "float.onnx", seq_len=16)
    assert compare_with_torch(model, float_path, inputs)["max_abs_logit_difference"] < 1e-4
    int8 = quantize_int8_dynamic(model, adapter.word_embeddings_path())
    path = export_onnx(int8, tmp_path / "int8.onnx", seq_len=16)
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert ops["MatMulInteger"] == sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.modules())
    report = compare_with_torch(int8, path, inputs)
    assert report["int8"] and report["predictions_agree"]
