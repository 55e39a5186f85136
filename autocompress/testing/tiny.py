"""Tiny models, tokenizers and data built from configs (no downloads), for fast tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun", "bright", "warm"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring", "weak", "grim", "cold"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "cast", "was", "is", "very", "quite", "story", "scene",
           "ending", "music", "and", "but", "this", "it", "really", "so"]
WORDS = POSITIVE + NEGATIVE + NEUTRAL


def tiny_tokenizer(directory: Path):
    """A BERT WordPiece tokenizer over a small fixed vocabulary, written to ``directory``."""
    from transformers import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    tokens = SPECIALS + WORDS + [f"w{i}" for i in range(40)]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_model(family: str = "bert", num_labels: int = 2, vocab_size: int = 128, layers: int = 2,
               hidden: int = 64, heads: int = 4, ffn: int = 128, seed: int = 0):
    """A randomly initialised sequence classifier of the given family, small enough for unit tests."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    if family == "bert":
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=ffn, num_labels=num_labels,
                            max_position_embeddings=128)
        return BertForSequenceClassification(config).eval()
    if family == "roberta":
        config = RobertaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, intermediate_size=ffn, num_labels=num_labels,
                               max_position_embeddings=130, pad_token_id=0, bos_token_id=2, eos_token_id=3)
        return RobertaForSequenceClassification(config).eval()
    if family == "distilbert":
        config = DistilBertConfig(vocab_size=vocab_size, dim=hidden, n_layers=layers, n_heads=heads,
                                  hidden_dim=ffn, num_labels=num_labels, max_position_embeddings=128)
        return DistilBertForSequenceClassification(config).eval()
    raise ValueError(f"unknown family {family!r} (bert, roberta, distilbert)")


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


def write_tiny_checkpoint(directory: Path, train_steps: int = 60, seed: int = 0, family: str = "bert") -> Path:
    """A tiny fine-tuned classifier checkpoint (safetensors) that separates ``synthetic_sentiment``."""
    from autocompress.data import TextDataset
    from autocompress.training import encode, fine_tune

    tokenizer = tiny_tokenizer(directory)
    model = tiny_model(family, seed=seed)
    texts, labels = synthetic_sentiment(400, seed=seed + 1)
    # Label ids follow autocompress.data.encode_labels: sorted names, so neg=0, pos=1.
    dataset = TextDataset(texts, [1 if label == "pos" else 0 for label in labels])
    fine_tune(model, encode(tokenizer, dataset, 32), epochs=train_steps * 32 / len(dataset),
              learning_rate=3e-3, batch_size=32, seed=seed)
    model.config.id2label = {0: "neg", 1: "pos"}
    model.config.label2id = {"neg": 0, "pos": 1}
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
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
