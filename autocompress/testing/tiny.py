"""Tiny models, tokenizers, inputs and data built from configs (no downloads), for fast tests.

Trained tiny models are trained once per process and family (``trained_tiny_model``) and handed
out as copies, so a whole test session pays for each family's training once.
"""

from __future__ import annotations

import copy
import functools
import random
import tempfile
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, CLS_ID, SEP_ID = 0, 2, 3
POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun", "bright", "warm"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring", "weak", "grim", "cold"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "cast", "was", "is", "very", "quite", "story", "scene",
           "ending", "music", "and", "but", "this", "it", "really", "so"]
WORDS = POSITIVE + NEGATIVE + NEUTRAL
#: Decoder-only (Llama-layout) families ``tiny_model`` builds: grouped-query attention (4 query heads
#: sharing 2 key/value heads) and a gated MLP, as in SmolLM2; Qwen3 adds per-head q/k norms.
DECODER_FAMILIES = ("llama", "qwen2", "qwen3", "mistral")
#: The model families every technique's contract checks run on (``autocompress.testing.contract``):
#: every encoder family the built-in adapters claim, one Llama-layout decoder (the others share its
#: adapter and module layout; ``DECODER_FAMILIES`` has them for the tests that need them) and GPT-2.
FAMILIES = ("bert", "roberta", "electra", "xlm-roberta", "distilbert", "deberta-v2", "mpnet", "modernbert", "llama",
            "gpt2")
#: How ``trained_tiny_model`` trains: steps of 32 examples of ``synthetic_sentiment`` at this rate.
TRAIN_STEPS, TRAIN_LEARNING_RATE = 60, 3e-3
#: Held-out accuracy a trained tiny model must reach; below it, training went wrong.
TRAINED_ACCURACY = 0.9


def tiny_tokenizer(directory: Path | None = None):
    """A BERT WordPiece tokenizer over a small fixed vocabulary, written to ``directory`` (if given)."""
    from transformers import BertTokenizer

    tokens = SPECIALS + WORDS + [f"w{i}" for i in range(40)]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(directory)
    return tokenizer


#: The tiny trained tokenizers' special tokens, RoBERTa's, at ids 0-4 (padding 0, start 2, end 3 as in ``tiny_model``).
ROBERTA_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]


def _roberta_style_fast(backend, directory: Path | None):
    """``backend`` (a trained ``tokenizers.Tokenizer``) as a transformers tokenizer with RoBERTa's special
    tokens (``<pad>``/``<unk>``/``<s>``/``</s>``/``<mask>``), written to ``directory`` (if given)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                        mask_token="<mask>")
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_bpe_tokenizer(directory: Path | None = None, vocab_size: int = 128):
    """A byte-level BPE tokenizer (RoBERTa/GPT-2 style: ``<s>``/``</s>``, ids 0/2/3 are padding/start/end
    as in ``tiny_model``) trained here on ``synthetic_sentiment`` texts, written to ``directory`` (if given).
    For checks that depend on the tokenizer's algorithm rather than the model family."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    texts, _ = synthetic_sentiment(200)
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS,
                                                          show_progress=False))
    backend.post_processor = processors.RobertaProcessing(("</s>", SEP_ID), ("<s>", CLS_ID))
    return _roberta_style_fast(backend, directory)


def tiny_unigram_tokenizer(directory: Path | None = None, vocab_size: int = 128):
    """A SentencePiece-style Unigram tokenizer (ALBERT/T5/XLM-R style: ``<s>``/``</s>``, ids 0/2/3 are
    padding/start/end as in ``tiny_model``) trained here on ``synthetic_sentiment`` texts, written to
    ``directory`` (if given). For checks that depend on the tokenizer's algorithm (a technique that
    cannot cut a Unigram vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    texts, _ = synthetic_sentiment(200)
    backend.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS,
                                                              unk_token="<unk>", show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B </s>",
                                                           special_tokens=[("<s>", CLS_ID), ("</s>", SEP_ID)])
    return _roberta_style_fast(backend, directory)


def tiny_model(family: str = "bert", num_labels: int = 2, vocab_size: int = 128, layers: int = 2,
               hidden: int = 64, heads: int = 4, ffn: int = 128, seed: int = 0):
    """A randomly initialised sequence classifier of the given family (one of ``FAMILIES``), small
    enough for unit tests. Token ids 0/2/3 are padding/[CLS]/[SEP] in every family, as in
    ``tiny_tokenizer``; ELECTRA keeps its own layout (embeddings narrower than the hidden size).
    Decoders (``DECODER_FAMILIES`` and ``gpt2``) classify from the last real token (``pad_token_id`` 0
    tells them where the padding starts); the Llama-layout ones with half as many key/value heads as
    query heads."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, num_labels=num_labels)
    if family == "bert":
        return tf.BertForSequenceClassification(tf.BertConfig(**common, max_position_embeddings=128)).eval()
    if family in ("roberta", "xlm-roberta"):
        # Position ids start after the padding index, hence 128 + 2 positions.
        config_class, model_class = ((tf.RobertaConfig, tf.RobertaForSequenceClassification) if family == "roberta"
                                     else (tf.XLMRobertaConfig, tf.XLMRobertaForSequenceClassification))
        config = config_class(**common, max_position_embeddings=130, pad_token_id=PAD_ID, bos_token_id=CLS_ID,
                              eos_token_id=SEP_ID)
        return model_class(config).eval()
    if family == "electra":
        config = tf.ElectraConfig(**common, embedding_size=hidden * 3 // 4, max_position_embeddings=128)
        return tf.ElectraForSequenceClassification(config).eval()
    if family == "distilbert":
        config = tf.DistilBertConfig(vocab_size=vocab_size, dim=hidden, n_layers=layers, n_heads=heads,
                                     hidden_dim=ffn, num_labels=num_labels, max_position_embeddings=128)
        return tf.DistilBertForSequenceClassification(config).eval()
    if family == "mpnet":
        config = tf.MPNetConfig(**common, max_position_embeddings=130, pad_token_id=PAD_ID, bos_token_id=CLS_ID,
                                eos_token_id=SEP_ID)
        return tf.MPNetForSequenceClassification(config).eval()
    if family in ("deberta-v2", "deberta-v2-unshared"):
        # DeBERTa-v3's layout: relative positions in 32 log buckets, projected by the query/key projections
        # themselves (share_att_key); "deberta-v2-unshared" has its own position projections (DeBERTa-v2).
        config = tf.DebertaV2Config(**common, max_position_embeddings=128, relative_attention=True,
                                    position_buckets=32, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                                    share_att_key=family == "deberta-v2", norm_rel_ebd="layer_norm",
                                    position_biased_input=False, pad_token_id=PAD_ID)
        return tf.DebertaV2ForSequenceClassification(config).eval()
    if family == "modernbert":
        # Global attention every other layer (0 and 2 global, 1 local over a window of 8 tokens), so both
        # kinds are exercised, and the first layer's missing attention norm is in every check.
        config = tf.ModernBertConfig(**common, max_position_embeddings=128, global_attn_every_n_layers=2,
                                     local_attention=8, pad_token_id=PAD_ID, bos_token_id=CLS_ID, cls_token_id=CLS_ID,
                                     eos_token_id=SEP_ID, sep_token_id=SEP_ID)
        return tf.ModernBertForSequenceClassification(config).eval()
    if family == "gpt2":  # multi-head attention (no key/value groups), transformers' Conv1D projections
        config = tf.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn,
                               n_positions=128, num_labels=num_labels, pad_token_id=PAD_ID, bos_token_id=CLS_ID,
                               eos_token_id=SEP_ID)
        return tf.GPT2ForSequenceClassification(config).eval()
    if family in DECODER_FAMILIES:
        config_class = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config,
                        "mistral": tf.MistralConfig}[family]
        config = config_class(**common, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
                              max_position_embeddings=128, pad_token_id=PAD_ID, bos_token_id=CLS_ID,
                              eos_token_id=SEP_ID, tie_word_embeddings=False)
        return tf.AutoModelForSequenceClassification.from_config(config).eval()
    raise ValueError(f"unknown family {family!r} ({', '.join(FAMILIES + DECODER_FAMILIES[1:])})")


def synthetic_sentiment(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short sentences whose label ('pos'/'neg') is set by a sentiment word; learnable in seconds."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        positive = i % 2 == 0
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if positive else NEGATIVE))
        texts.append(" ".join(words))
        labels.append("pos" if positive else "neg")
    return texts, labels


def varied_inputs(vocab_size: int, batch_size: int = 8, max_length: int = 24, seed: int = 0,
                  pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """A padded batch for checks that compare two models' outputs: ``batch_size`` rows of different
    lengths (4 up to ``max_length``), each [CLS] ids [SEP] then padding (attention mask 0), the ids
    drawn without repeats from all non-special ids of the vocabulary until it is used up, so most
    rows of the embedding table take part. (``autocompress.measure.dummy_inputs`` is for timing:
    full rows, and values that do not matter.)"""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(4, max(4, max_length), batch_size).round().long().tolist()
    first = len(SPECIALS) if vocab_size > len(SPECIALS) + 1 else 0
    pool: list[int] = []
    ids = torch.full((batch_size, max(lengths)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        body = []
        while len(body) < length - 2:
            if not pool:
                pool = (torch.randperm(vocab_size - first, generator=generator) + first).tolist()
            body.append(pool.pop())
        ids[row, :length] = torch.tensor([CLS_ID, *body, SEP_ID])
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def text_inputs(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """``texts`` as ``tokenizer`` encodes them for a model: padded to the longest, with the mask
    (no token type ids, which DistilBERT does not take)."""
    return dict(tokenizer(list(texts), padding=True, return_tensors="pt", return_token_type_ids=False))


@functools.cache
def _trained_state(family: str, seed: int, train_steps: int) -> tuple[dict[str, torch.Tensor], float]:
    from autocompress.data import TextDataset
    from autocompress.measure import thread_count
    from autocompress.training import accuracy, encode, fine_tune

    with tempfile.TemporaryDirectory(prefix="tiny-tokenizer-") as tmp:
        tokenizer = tiny_tokenizer(Path(tmp))
    model = tiny_model(family, seed=seed)
    texts, labels = synthetic_sentiment(400, seed=seed + 1)
    # Label ids follow autocompress.data.encode_labels: sorted names, so neg=0, pos=1.
    dataset = TextDataset(texts, [1 if label == "pos" else 0 for label in labels])
    held_out_texts, held_out_labels = synthetic_sentiment(200, seed=seed + 1000)
    held_out = TextDataset(held_out_texts, [1 if label == "pos" else 0 for label in held_out_labels])
    # One thread: a model this small gains nothing from two, and on a busy machine two threads
    # contend with every other process (ten times slower here).
    with thread_count(1):
        fine_tune(model, encode(tokenizer, dataset, 32), epochs=train_steps * 32 / len(dataset),
                  learning_rate=TRAIN_LEARNING_RATE, batch_size=32, seed=seed)
        held_out_accuracy = accuracy(model, encode(tokenizer, held_out, 32))
    model.config.id2label = {0: "neg", 1: "pos"}
    model.config.label2id = {"neg": 0, "pos": 1}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, held_out_accuracy


def trained_tiny_model(family: str = "bert", seed: int = 0, train_steps: int = TRAIN_STEPS):
    """``tiny_model(family)`` fine-tuned on ``synthetic_sentiment`` (labels neg=0, pos=1), so its
    outputs depend on its weights. Trained once per process and arguments; each call returns a
    fresh copy. Raises RuntimeError when the training did not reach ``TRAINED_ACCURACY`` on
    held-out sentences (with the default ``train_steps``)."""
    state, held_out_accuracy = _trained_state(family, seed, train_steps)
    if train_steps >= TRAIN_STEPS and held_out_accuracy < TRAINED_ACCURACY:
        raise RuntimeError(f"tiny {family} model: held-out accuracy {held_out_accuracy:.3f} after {train_steps} "
                           f"training steps, below {TRAINED_ACCURACY}")
    model = tiny_model(family, seed=seed)
    model.load_state_dict(copy.deepcopy(state))
    model.config.id2label = {0: "neg", 1: "pos"}
    model.config.label2id = {"neg": 0, "pos": 1}
    return model.eval()


def write_tiny_checkpoint(directory: Path, train_steps: int = TRAIN_STEPS, seed: int = 0, family: str = "bert") -> Path:
    """A tiny fine-tuned classifier checkpoint (safetensors) that separates ``synthetic_sentiment``
    (``trained_tiny_model``: trained once per process, written anew each call)."""
    tokenizer = tiny_tokenizer(directory)
    model = trained_tiny_model(family, seed=seed, train_steps=train_steps)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def write_tiny_causal_lm(directory: Path, family: str = "llama", layers: int = 4, seed: int = 0) -> Path:
    """A randomly initialised tiny causal language model of a decoder family (``DECODER_FAMILIES``, or
    ``gpt2``) with ``tiny_bpe_tokenizer``, written as a checkpoint (safetensors), as a user's
    ``--model DIR`` would be: ``AutoModelForCausalLM.from_pretrained(directory)`` loads it."""
    import transformers as tf

    tokenizer = tiny_bpe_tokenizer(directory)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), pad_token_id=PAD_ID, bos_token_id=CLS_ID, eos_token_id=SEP_ID)
    if family == "gpt2":
        config = tf.GPT2Config(**common, n_embd=64, n_layer=layers, n_head=4, n_positions=128)
    else:
        config_class = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config,
                        "mistral": tf.MistralConfig}[family]
        config = config_class(**common, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, intermediate_size=128, max_position_embeddings=128,
                              tie_word_embeddings=True)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def write_tiny_task(root: Path, examples: int, seed: int = 0, text_column: str = "text", label_column: str = "label",
                    filename: str = "data.csv") -> Path:
    """A whole local task in ``root``: ``model/`` (``write_tiny_checkpoint``) and a CSV of
    ``synthetic_sentiment(examples, seed)`` with the given column names. Returns ``root``, ready for
    ``autocompress search --model root/model --data root/<filename>``."""
    import pandas as pd

    write_tiny_checkpoint(root / "model")
    texts, labels = synthetic_sentiment(examples, seed=seed)
    pd.DataFrame({text_column: texts, label_column: labels}).to_csv(root / filename, index=False)
    return root


def write_tiny_sentence_model(directory: Path, pooling: str = "mean", normalize: bool = True, layers: int = 4,
                              seed: int = 0) -> Path:
    """A randomly initialised tiny sentence-transformers folder (a ``BertModel`` with ``tiny_tokenizer``,
    ``modules.json`` listing Transformer, Pooling with ``pooling`` and, when ``normalize``, Normalize),
    as a user's ``--model DIR`` for ``--task embedding`` would be; no sentence-transformers needed."""
    import json

    import transformers as tf

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(directory)
    torch.manual_seed(seed)
    config = tf.BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=128, pad_token_id=PAD_ID)
    tf.BertModel(config).save_pretrained(directory, safe_serialization=True)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 64, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    return directory
