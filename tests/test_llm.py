"""Decoder LLMs: a causal LM as a prompted classifier, searched, saved and reloaded; unsupported families refused."""

import json

import pandas as pd
import pytest
import torch

from autocompress.cli import main
from autocompress.errors import InputError
from autocompress.prompted import Prompt, causal_lm_of, label_token_ids, prompted_classifier, render_data
from autocompress.testing import fresh_process_outputs, synthetic_sentiment, write_tiny_causal_lm

LABEL_WORDS = " bad, good"  # neg, pos (sorted label names), as the tiny tokenizer spells them


@pytest.fixture(scope="module")
def causal_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    write_tiny_causal_lm(root / "model")
    texts, labels = synthetic_sentiment(160, seed=3)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "reviews.csv", index=False)
    return root


def _lm_and_tokenizer(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def test_prompted_classifier_logits_are_the_next_token_logits_of_the_label_words(causal_task):
    lm, tokenizer = _lm_and_tokenizer(causal_task / "model")
    prompt = Prompt("Review: {text}\nSentiment:", (" bad", " good"))
    classifier = prompted_classifier(lm, tokenizer, ["neg", "pos"], prompt)
    texts = [prompt.render(t) for t in ["the film was good", "a dull and very boring plot it was", "fun"]]
    batch = tokenizer(texts, return_tensors="pt", padding=True)  # rows of different lengths: padding on the right
    ids = label_token_ids(tokenizer, [" bad", " good"])
    with torch.no_grad():
        got = classifier(**batch).logits
        for row, text in enumerate(texts):  # each prompt alone, unpadded, through the causal LM
            alone = tokenizer(text, return_tensors="pt")
            expected = lm(**alone).logits[0, -1, ids]
            torch.testing.assert_close(got[row], expected, rtol=1e-4, atol=1e-5)
    assert classifier.score.weight.shape == (2, lm.config.hidden_size)  # 2 rows, not the vocabulary
    assert classifier.config.autocompress_prompt == {"template": prompt.template, "label_words": [" bad", " good"]}


def test_a_prompted_classifier_becomes_again_the_causal_lm_it_came_from_as_compressed(causal_task):
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.plugins.layer_drop import keep_layers

    lm, tokenizer = _lm_and_tokenizer(causal_task / "model")
    prompt = Prompt("Review: {text}\nSentiment:", (" bad", " good"))
    classifier = prompted_classifier(lm, tokenizer, ["neg", "pos"], prompt)
    batch = tokenizer([prompt.render("the film was good")], return_tensors="pt")
    ids = label_token_ids(tokenizer, [" bad", " good"])
    with torch.no_grad():
        torch.testing.assert_close(causal_lm_of(classifier)(**batch).logits, lm(**batch).logits)
        keep_layers(classifier, adapter_for(classifier, build_host().architectures), [0, 2])  # compressed
        again = causal_lm_of(classifier)
        assert len(again.model.layers) == 2 and again.model is classifier.model  # the classifier's own decoder
        assert again.get_output_embeddings().weight is classifier.model.embed_tokens.weight
        logits = again(**batch).logits
        torch.testing.assert_close(logits[0, -1, ids], classifier(**batch).logits[0])
        assert not torch.allclose(logits, lm(**batch).logits)
        generated = again.generate(**batch, min_new_tokens=4, max_new_tokens=4, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        assert generated.shape[1] == batch["input_ids"].shape[1] + 4
    classifier.config.tie_word_embeddings = False  # an LM with its own output matrix: only 2 rows of it are left
    with pytest.raises(ValueError, match="not tied"):
        causal_lm_of(classifier)
    timed = causal_lm_of(classifier, timing_only=True)  # per-token latency needs the head's shape, not its rows
    assert timed.lm_head.weight.shape == (lm.config.vocab_size, lm.config.hidden_size)


def test_a_factorised_embedding_table_generates_through_its_two_factors(causal_task):
    """A prompted classifier whose table was factorised (the example plugin's embedding_factorization)
    generates: the tied head is the two factors, shared, and scores exactly the tokens' embeddings."""
    from autocompress.arch import FactorizedEmbedding

    lm, tokenizer = _lm_and_tokenizer(causal_task / "model")
    classifier = prompted_classifier(lm, tokenizer, ["neg", "pos"], Prompt(label_words=(" bad", " good")))
    table = classifier.model.embed_tokens
    torch.manual_seed(0)
    factors = FactorizedEmbedding(torch.nn.Embedding(table.num_embeddings, 8),
                                  torch.nn.Linear(8, table.embedding_dim, bias=False))
    classifier.set_input_embeddings(factors)
    generator = causal_lm_of(classifier)
    ids = torch.randint(10, len(tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = classifier.model(input_ids=ids).last_hidden_state
        every_token = factors(torch.arange(table.num_embeddings))  # V x H: what a plain tied head would hold
        torch.testing.assert_close(generator(input_ids=ids).logits, hidden @ every_token.T, rtol=1e-4, atol=1e-5)
    down, up = generator.get_output_embeddings()
    assert up.weight is factors[0].weight and down.weight.data_ptr() == factors[1].weight.data_ptr()


def test_a_prompted_classifier_generates_through_its_own_decoder_and_a_vocabulary_wide_head(causal_task):
    from autocompress.measure import MeasureSettings, measure_eager

    lm, tokenizer = _lm_and_tokenizer(causal_task / "model")
    classifier = prompted_classifier(lm, tokenizer, ["neg", "pos"], Prompt(label_words=(" bad", " good")))
    generator = causal_lm_of(classifier)
    ids = torch.randint(10, len(tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the tiny Llama ties its head to the embeddings: the very same LM
        torch.testing.assert_close(generator(input_ids=ids).logits, lm(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
    assert generator.model is classifier.model  # shared, so a compressed classifier generates as compressed
    assert generator.lm_head.weight is classifier.model.embed_tokens.weight
    assert causal_lm_of(lm) is lm
    # An int8 word-embedding table (quantization with embeddings: true) gets an int8 head of its values.
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

    int8 = quantize_dynamic(classifier, {torch.nn.Linear: default_dynamic_qconfig,
                                         "model.embed_tokens": float_qparams_weight_only_qconfig}, dtype=torch.qint8)
    with torch.no_grad():
        top = causal_lm_of(int8)(input_ids=ids).logits.argmax(-1)
    assert (top == lm(input_ids=ids).logits.argmax(-1)).float().mean() > 0.8
    # Per-token latency of a prompted classifier (the search's --latency token) is that of generating.
    measured = measure_eager(classifier, MeasureSettings(latency="token", repeats=2, warmup=1))
    assert measured.latency_ms > 0 and measured.parameters == sum(p.numel() for p in lm.parameters())


def test_prompt_options_are_checked(causal_task):
    _, tokenizer = _lm_and_tokenizer(causal_task / "model")
    with pytest.raises(InputError, match="exactly once"):
        Prompt("Review without a field")
    with pytest.raises(InputError, match="only {text}"):
        Prompt("{text} {other}")
    with pytest.raises(InputError, match="2 words .* for 3 classes"):
        Prompt(label_words=("a", "b")).words(["x", "y", "z"])
    with pytest.raises(InputError, match="repeat"):
        label_token_ids(tokenizer, [" good", " good"])
    assert Prompt(label_words=("bad", " good")).words(["neg", "pos"]) == [" bad", " good"]


def test_render_data_renders_every_split_and_keeps_labels():
    from autocompress.data import TaskData, TextDataset

    split = TextDataset(["a", "b"], [0, 1])
    data = render_data(TaskData(split, split, split, ["neg", "pos"]), Prompt("<{text}>"))
    assert data.test.texts == ["<a>", "<b>"] and data.train.labels == [0, 1]


def _search(causal_task, out, *extra, model=None):
    return main(["search", "--model", str(model or causal_task / "model"), "--data", str(causal_task / "reviews.csv"),
                 "--label-words", LABEL_WORDS, "--out", str(out), "--repeats", "3", "--warmup", "1",
                 "--no-progress", "--max-accuracy-drop", "0.5", "--free-floor", "none", *extra])


ALL_LLM_PLANS = """\
- layer_drop: {keep_layers: 2, strategy: importance}
  ffn_pruning: {keep_fraction: 0.5}
  head_pruning: {fraction: 0.5, scoring: gradient}
  distillation: {epochs: 0.5}
  quantization: {dtype: int8}
- low_rank: {rank_ratio: 0.3, layers: both}
  lora: {rank: 4, epochs: 0.5, targets: both}
  prompt_tuning: {num_tokens: 4, epochs: 0.5}
  quantization: {dtype: bf16}
- layer_drop: {keep_layers: 3, strategy: every_other}
  head_pruning: {fraction: 0.5, scoring: l1}
"""


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_llm_search_with_every_llm_technique_reloads_in_a_fresh_process(family, causal_task, tmp_path):
    if family != "llama":
        write_tiny_causal_lm(tmp_path / family, family=family)
    plans = tmp_path / "plans.yaml"
    plans.write_text(ALL_LLM_PLANS)
    out = tmp_path / "run"
    techniques = "layer_drop,ffn_pruning,head_pruning,low_rank,distillation,lora,prompt_tuning,quantization"
    assert _search(causal_task, out, "--trials", "3", "--techniques", techniques, "--starting-points",
                   str(plans), model=None if family == "llama" else tmp_path / family) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"] * 3, trials[["plan", "reason"]].to_string()
    run = json.loads((out / "run.json").read_text())
    assert run["task_info"]["teacher_training"]["prompt"]["label_words"] == [" bad", " good"]
    best = json.loads((out / "pareto.json").read_text())["recommended"]
    assert best is not None
    script = (
        "import sys, json, torch, autocompress\n"
        "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
        "texts = ['Review: the film was good\\nSentiment:', 'Review: a dull plot\\nSentiment:']\n"
        "batch = tok(texts, return_tensors='pt', padding=True)\n"
        "with torch.no_grad():\n"
        "    print(json.dumps(model(**batch).logits.tolist()))\n"
    )
    fresh = [json.loads(output) for output in fresh_process_outputs(script, out / "best")]
    assert fresh[0] == fresh[1]
    import autocompress

    model, tokenizer = autocompress.load_pretrained(out / "best")
    batch = tokenizer(['Review: the film was good\nSentiment:', 'Review: a dull plot\nSentiment:'],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**batch).logits.tolist() == fresh[0]


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_a_qwen_or_mistral_layout_checkpoint_gets_a_search(family, tmp_path, capsys):
    root = tmp_path / family
    write_tiny_causal_lm(root / "model", family=family, layers=2)
    texts, labels = synthetic_sentiment(80, seed=4)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "reviews.csv", index=False)
    out = tmp_path / "run"
    assert _search(root, out, "--trials", "1", "--techniques", "layer_drop,quantization", "--starting-points",
                   "none", "--max-accuracy-drop", "0.9") == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"], trials[["plan", "reason"]].to_string()
    # A model that generates is timed both ways: the searched forward pass and the time per generated token.
    assert trials.loc[0, "latency_ms.prompt"] == trials.loc[0, "latency_ms"] and trials.loc[0, "latency_ms.token"] > 0
    pareto = json.loads((out / "pareto.json").read_text())
    assert set(pareto["baseline"]["latency_ms_by_mode"]) == {"prompt", "token"}
    assert "ms per token" in (out / "report.md").read_text()
    printed = capsys.readouterr().out  # how the teacher was made, and (a random tiny LM) what to try instead
    assert "zero-shot prompted classifier from" in printed and "' bad' / ' good'" in printed
    assert "try another --prompt-template or --label-words" in printed


def test_a_gpt2_checkpoint_gets_a_search_whose_best_model_reloads_in_a_fresh_process(tmp_path):
    root = tmp_path / "gpt2"
    write_tiny_causal_lm(root / "model", family="gpt2", layers=3)
    texts, labels = synthetic_sentiment(80, seed=4)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "reviews.csv", index=False)
    plans = tmp_path / "plans.yaml"
    plans.write_text("- layer_drop: {keep_layers: 2, strategy: every_other}\n"
                     "  head_pruning: {fraction: 0.5, scoring: l1}\n"
                     "  ffn_pruning: {keep_fraction: 0.5}\n"
                     "  quantization: {dtype: int8}\n")
    out = tmp_path / "run"
    assert _search(root, out, "--trials", "1", "--techniques", "layer_drop,head_pruning,ffn_pruning,quantization",
                   "--starting-points", str(plans), "--max-accuracy-drop", "0.9") == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"], trials[["plan", "reason"]].to_string()
    manifest = json.loads((out / "best" / "autocompress.json").read_text())
    assert manifest["model_class"] == "GPT2ForSequenceClassification"
    assert sorted(step["technique"] for step in manifest["structure"]["steps"]) == ["ffn_pruning", "head_pruning",
                                                                                   "layer_drop"]
    assert json.loads((out / "run.json").read_text())["task_info"]["teacher_training"]["recipe"].startswith(
        "zero-shot prompted")
    script = (
        "import sys, json, torch, autocompress\n"
        "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
        "texts = ['Review: the film was good\\nSentiment:', 'Review: a dull plot\\nSentiment:']\n"
        "batch = tok(texts, return_tensors='pt', padding=True)\n"
        "with torch.no_grad():\n"
        "    kinds = sorted({f'{type(m).__module__}.{type(m).__name__}' for m in model.modules()})\n"
        "    print(json.dumps([kinds, model(**batch).logits.tolist()]))\n"
    )
    fresh = [json.loads(output) for output in fresh_process_outputs(script, out / "best")]
    assert fresh[0] == fresh[1]
    kinds = fresh[0][0]  # int8 linears, as the plan deployed them; no Conv1D left
    assert "torch.ao.nn.quantized.dynamic.modules.linear.Linear" in kinds, kinds
    assert not any(kind.endswith("Conv1D") for kind in kinds), kinds
    import autocompress

    model, tokenizer = autocompress.load_pretrained(out / "best")
    batch = tokenizer(['Review: the film was good\nSentiment:', 'Review: a dull plot\nSentiment:'],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**batch).logits.tolist() == fresh[0][1]


def _write_tiny_opt(directory):
    """A tiny OPT causal LM (a decoder family no adapter supports), from a config."""
    import transformers as tf

    from autocompress.testing import tiny_bpe_tokenizer

    tokenizer = tiny_bpe_tokenizer(directory)
    config = tf.OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                          num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32,
                          pad_token_id=0, bos_token_id=2, eos_token_id=3)
    tf.OPTForCausalLM(config).save_pretrained(directory, safe_serialization=True)


def test_an_architecture_no_adapter_supports_exits_2_naming_the_families(tmp_path, capsys, monkeypatch):
    root = tmp_path / "opt"
    _write_tiny_opt(root / "model")
    texts, labels = synthetic_sentiment(40, seed=4)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "reviews.csv", index=False)
    import transformers

    def no_loading(*args, **kwargs):  # the refusal must come before the model is loaded
        raise AssertionError("the model was loaded before the architecture was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    assert _search(root, tmp_path / "run", "--trials", "1") == 2
    err = capsys.readouterr().err
    assert "model_type 'opt'" in err and "Llama-layout decoders" in err and "BERT-layout encoders" in err
    assert "GPT-2 decoders (gpt2)" in err
    assert not (tmp_path / "run").exists()
