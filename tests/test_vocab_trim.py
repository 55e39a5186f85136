"""vocab_trim against the contract kit, plus exact outputs, tokenizer remapping and round trips."""

import copy

import pytest
import torch

from autocompress import load_pretrained
from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.data import TaskData, TextDataset
from autocompress.measure import parameter_count, thread_count
from autocompress.model_io import save_candidate
from autocompress.plugin_manager import build_host
from autocompress.plugins.vocab_trim import VocabTrim, trimmed_tokenizer
from autocompress.technique import ApplyContext, ModelAndTokenizer, PlanStep
from autocompress.testing import (
    TechniqueContract,
    tiny_bpe_tokenizer,
    tiny_model,
    tiny_tokenizer,
    tiny_unigram_tokenizer,
)

# Leaves gaps in the tiny vocabulary (e.g. "good", "fine", "w0".."w39" unused) so ids really move.
TRAIN = ["the film was great", "a boring plot and a dull cast", "really superb music", "the ending was awful",
         "the cast was great"]
IN_VOCAB = ["the plot was great and the music superb", "a dull film", "awful ending"]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine it makes them far slower.
    with thread_count(1):
        yield


class TestVocabTrimContract(TechniqueContract):
    technique = VocabTrim
    mild_config = {"min_count": 1}
    strong_config = {"min_count": 3}
    bad_configs = [{"min_count": 0}, {"min_count": 1.5}, {"min_count": True}, {"keep_extra": 10}]
    # The embedding lookup is a gather whose cost does not depend on the vocabulary size, and the
    # matrix products (all of the latency) are untouched: only parameters and memory go down.
    reduces_latency = False
    # Text whose words were all in the training texts tokenizes exactly as before: outputs are identical.
    mild_tolerance = 0.0


def _context(model, tmp_path, texts=TRAIN) -> ApplyContext:
    split = TextDataset(list(texts), [0] * len(texts))
    return ApplyContext(adapter=adapter_for(model, build_host().architectures),
                        tokenizer=tiny_tokenizer(tmp_path / "tokenizer"),
                        data=TaskData(split, split, split, ["neg", "pos"]), max_length=32)


def _trim(model, context, **values):
    return VocabTrim().apply(model, VocabTrim.make_config(values), context)


def _logits(model, tokenizer, texts):
    with torch.inference_mode():
        return model(**tokenizer(list(texts), padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_in_vocabulary_text_gives_identical_logits(tmp_path, family):
    model = tiny_model(family)
    context = _context(model, tmp_path)
    old_tokenizer = context.tokenizer
    expected = _logits(model, old_tokenizer, IN_VOCAB)
    trimmed = _trim(copy.deepcopy(model), context)
    assert context.tokenizer is not old_tokenizer
    assert torch.equal(_logits(trimmed, context.tokenizer, IN_VOCAB), expected)


def test_new_tokenizer_maps_in_vocabulary_text_to_the_remapped_ids(tmp_path):
    model = tiny_model("bert")
    context = _context(model, tmp_path)
    old = context.tokenizer
    _trim(model, context)
    new = context.tokenizer
    old_ids = context.token_map
    for text in IN_VOCAB:
        before, after = old(text)["input_ids"], new(text)["input_ids"]
        assert after != before  # unused tokens before them were dropped, so ids really moved
        assert old_ids[after].tolist() == before
        assert new.convert_ids_to_tokens(after) == old.convert_ids_to_tokens(before)
    used = {token for text in TRAIN for token in old.tokenize(text)}
    assert set(new.get_vocab()) == used | set(old.all_special_tokens)
    assert sorted(new.get_vocab().values()) == list(range(len(new)))
    assert model.get_input_embeddings().num_embeddings == len(new) == model.config.vocab_size


def test_dropped_tokens_become_unknown(tmp_path):
    model = tiny_model("bert")
    context = _context(model, tmp_path)
    _trim(model, context)
    assert context.tokenizer.tokenize("good movie w5 great") == ["[UNK]", "[UNK]", "[UNK]", "great"]


def test_special_tokens_are_kept_and_their_ids_remapped(tmp_path):
    from transformers import BertTokenizer

    from autocompress.testing.tiny import SPECIALS, WORDS

    # Specials placed after the words: trimming unused words moves [PAD], [CLS] and [SEP].
    vocab = {token: i for i, token in enumerate(WORDS + SPECIALS)}
    model = tiny_model("bert")
    model.config.pad_token_id = vocab["[PAD]"]
    context = _context(model, tmp_path)
    context.tokenizer = old = BertTokenizer(vocab=vocab)
    expected = _logits(model, old, IN_VOCAB)
    _trim(model, context)
    new = context.tokenizer
    assert new.all_special_tokens == old.all_special_tokens
    assert new.pad_token_id == model.config.pad_token_id == model.get_input_embeddings().padding_idx
    assert new.pad_token_id != old.pad_token_id and new.cls_token_id != old.cls_token_id
    ids = new("great", padding="max_length", max_length=5)["input_ids"]
    assert ids == [new.cls_token_id, new.convert_tokens_to_ids("great"), new.sep_token_id] + [new.pad_token_id] * 2
    assert torch.equal(_logits(model, new, IN_VOCAB), expected)  # padded batch: [PAD] rows moved correctly


def test_min_count_drops_rare_tokens(tmp_path):
    model = tiny_model("bert")
    context = _context(model, tmp_path)
    _trim(model, context, min_count=2)
    vocab = context.tokenizer.get_vocab()
    assert {"the", "was", "great", "a"} <= set(vocab)  # each used at least twice
    assert "superb" not in vocab and "music" not in vocab  # used once


def test_parameter_count_goes_down(tmp_path):
    model = tiny_model("bert")
    before = parameter_count(model)
    trimmed = _trim(copy.deepcopy(model), _context(model, tmp_path))
    removed = (128 - trimmed.config.vocab_size) * model.config.hidden_size
    assert parameter_count(trimmed) == before - removed > 0


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_save_and_reload_round_trip(tmp_path, family):
    model = tiny_model(family)
    context = _context(model, tmp_path)
    trimmed = apply_steps(model, [PlanStep(VocabTrim, VocabTrim.make_config({}))], context)  # records the step
    directory = save_candidate(tmp_path / "candidate", trimmed, context.tokenizer, [])
    reloaded, tokenizer = load_pretrained(directory)
    texts = IN_VOCAB + ["good movie w5 great"]
    for text in texts:
        assert tokenizer(text)["input_ids"] == context.tokenizer(text)["input_ids"]
    assert torch.equal(_logits(reloaded, tokenizer, texts), _logits(trimmed, context.tokenizer, texts))


def test_needs_training_texts(tmp_path):
    model = tiny_model("bert")
    context = _context(model, tmp_path)
    context.data = None
    with pytest.raises(ValueError, match="vocab_trim needs the task's training texts"):
        _trim(model, context)


def test_non_wordpiece_tokenizers_are_refused(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    model = tiny_model("bert")
    context = _context(model, tmp_path)
    context.tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])))
    with pytest.raises(ValueError, match=r"WordPiece.*uses a BPE model"):
        _trim(model, context)
    assert model.get_input_embeddings().num_embeddings == 128  # refused before touching the model


def _support(family, tokenizer):
    model = ModelAndTokenizer(adapter_for(tiny_model(family), build_host().architectures), tokenizer)
    return VocabTrim.unsupported_reason_for(model)


def test_support_is_decided_by_the_tokenizer_not_the_model_family():
    # A RoBERTa-layout model with a WordPiece tokenizer is supported, and so is any with byte-level BPE...
    assert _support("roberta", tiny_tokenizer()) is None
    assert _support("xlm-roberta", tiny_tokenizer()) is None
    for family in ("bert", "roberta", "llama"):
        assert _support(family, tiny_bpe_tokenizer()) is None
    # ... and a Unigram vocabulary is not, whatever the family, the tokenizer named.
    unigram = tiny_unigram_tokenizer()
    for family in ("bert", "roberta"):
        reason = _support(family, unigram)
        assert reason == (f"vocab_trim supports WordPiece and byte-level BPE tokenizers only; {type(unigram).__name__} "
                          "uses a Unigram model (its merges/scores would need rewriting too, and a word of new text "
                          "could lose every piece)")


def test_a_causal_lm_is_refused_its_head_scores_every_token():
    from transformers import AutoModelForCausalLM, LlamaConfig

    lm = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,
                                                      num_attention_heads=2, intermediate_size=64))
    model = ModelAndTokenizer(adapter_for(lm, build_host().architectures), tiny_bpe_tokenizer())
    assert "output head scores every token" in VocabTrim.unsupported_reason_for(model)


BPE_TRAIN = ["the film was great", "a boring plot and a dull cast", "the ending was awful", "the cast was great"]


def _bpe_trimmed(family, tmp_path):
    tokenizer = tiny_bpe_tokenizer(tmp_path / "bpe")
    model = tiny_model(family, vocab_size=len(tokenizer))
    context = _context(model, tmp_path, BPE_TRAIN)
    context.tokenizer = tokenizer
    original = copy.deepcopy(model).eval()
    trimmed = apply_steps(model, [PlanStep(VocabTrim, VocabTrim.make_config({}))], context).eval()
    return original, tokenizer, trimmed, context


@pytest.mark.parametrize("family", ["llama", "roberta"])
def test_a_byte_level_bpe_vocabulary_is_cut_and_its_words_tokenize_as_before(tmp_path, family):
    original, tokenizer, trimmed, context = _bpe_trimmed(family, tmp_path)
    new = context.tokenizer
    assert len(new) < len(tokenizer) and trimmed.get_input_embeddings().num_embeddings == len(new)
    # Text of the training texts' words: the same tokens (renumbered), identical logits.
    text = ["the cast was awful", "a great plot"]
    old_ids, new_ids = tokenizer(text)["input_ids"], new(text)["input_ids"]
    assert [tokenizer.convert_ids_to_tokens(i) for i in old_ids] == [new.convert_ids_to_tokens(i) for i in new_ids]
    assert torch.equal(_logits(original, tokenizer, text), _logits(trimmed, new, text))
    # Any other text still tokenizes, in shorter pieces, and spells the same string (never unknown).
    other = "the music felt superb"  # words the training texts never used, letters they did
    ids = new(other, add_special_tokens=False)["input_ids"]
    assert new.unk_token_id not in ids and new.decode(ids) == other
    assert len(ids) >= len(tokenizer(other, add_special_tokens=False)["input_ids"])
    # Every merge left makes a kept token from kept tokens.
    import json

    state = json.loads(new.backend_tokenizer.to_str())["model"]
    for merge in state["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        assert {left, right, left + right} <= state["vocab"].keys()


def test_a_byte_level_bpe_trimmed_classifier_reloads_with_identical_logits(tmp_path):
    _, _, trimmed, context = _bpe_trimmed("llama", tmp_path)
    directory = save_candidate(tmp_path / "saved", trimmed, context.tokenizer, [])
    reloaded, tokenizer = load_pretrained(directory)
    text = ["the film was great", "the music felt superb"]
    assert tokenizer(text)["input_ids"] == context.tokenizer(text)["input_ids"]
    assert torch.equal(_logits(trimmed, context.tokenizer, text), _logits(reloaded, tokenizer, text))


def test_a_roberta_layout_classifier_with_wordpiece_is_trimmed_and_reloads_identically(tmp_path):
    model = tiny_model("roberta")
    original = copy.deepcopy(model)
    context = _context(model, tmp_path)
    old_tokenizer = context.tokenizer
    trimmed = apply_steps(model, [PlanStep(VocabTrim, VocabTrim.make_config({}))], context)
    assert trimmed.config.vocab_size == len(context.tokenizer) < 128
    assert parameter_count(trimmed) < parameter_count(original)
    expected = _logits(original, old_tokenizer, IN_VOCAB)
    assert torch.equal(_logits(trimmed, context.tokenizer, IN_VOCAB), expected)
    directory = save_candidate(tmp_path / "candidate", trimmed, context.tokenizer, [])
    reloaded, tokenizer = load_pretrained(directory)
    assert torch.equal(_logits(reloaded, tokenizer, IN_VOCAB), expected)


def _roberta_padded_at_one(tmp_path):
    """A RoBERTa-layout model whose [PAD] is id 1, after an id 0 no training text uses."""
    from transformers import BertTokenizer

    from autocompress.testing.tiny import SPECIALS, WORDS

    vocab = {token: i for i, token in enumerate(["unused", *SPECIALS, *WORDS])}
    model = tiny_model("roberta")
    model.config.pad_token_id = vocab["[PAD]"]
    model.roberta.embeddings.padding_idx = vocab["[PAD]"]  # as a checkpoint saved with pad 1 builds it
    context = _context(model, tmp_path)
    context.tokenizer = BertTokenizer(vocab=vocab)
    return model, context


def test_a_roberta_layout_padding_id_keeps_its_number(tmp_path):
    # RoBERTa numbers positions from the padding id + 1: had [PAD] moved to 0, every position would shift.
    model, context = _roberta_padded_at_one(tmp_path)
    original, old_tokenizer = copy.deepcopy(model), context.tokenizer
    trimmed = apply_steps(model, [PlanStep(VocabTrim, VocabTrim.make_config({}))], context)
    new = context.tokenizer
    assert new.pad_token_id == trimmed.config.pad_token_id == 1 and new.convert_ids_to_tokens(0) == "unused"
    assert trimmed.config.vocab_size < len(old_tokenizer)
    expected = _logits(original, old_tokenizer, IN_VOCAB)  # a padded batch
    assert torch.equal(_logits(trimmed, new, IN_VOCAB), expected)
    reloaded, tokenizer = load_pretrained(save_candidate(tmp_path / "candidate", trimmed, new, []))
    assert torch.equal(_logits(reloaded, tokenizer, IN_VOCAB), expected)


def test_without_the_padding_rule_the_roberta_layout_outputs_would_change(tmp_path):
    # The check above can fail: the same trim with the padding id moved gives other logits.
    from autocompress.plugins.vocab_trim import kept_token_ids, trim_embeddings

    model, context = _roberta_padded_at_one(tmp_path)
    expected = _logits(model, context.tokenizer, IN_VOCAB)
    kept = kept_token_ids(context.tokenizer, model.config, TRAIN, 1, 128)
    assert 0 not in kept
    trim_embeddings(model, context.adapter, kept)
    model.roberta.embeddings.padding_idx = model.config.pad_token_id  # as the reloaded model would be built
    new = trimmed_tokenizer(context.tokenizer, kept)
    assert not torch.allclose(_logits(model, new, IN_VOCAB), expected, atol=1e-3)
