"""A tiny token classifier (NER) and synthetic tagged sentences it learns in seconds, for tests.

Person names (a first name, often followed by a surname) are ``B-PER I-PER``, places (one word,
or "new york") ``B-LOC (I-LOC)``, every other word ``O``. Some surnames split into two word pieces
("johnson" -> "john", "##son"), so the tags' alignment with sub-tokens is exercised.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

#: The tags in the model's id order.
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
FIRST_NAMES = ("anna", "peter", "maria", "john", "lena", "omar")
SURNAMES = ("smith", "jones", "muller", "johnson", "peterson")
PLACES = (("paris",), ("berlin",), ("london",), ("rome",), ("new", "york"))
CONTEXT = ("met", "in", "visited", "lives", "from", "the", "city", "and", "with", "today", "yesterday", "saw",
           "a", "friend", "called", "went", "to")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Steps of 32 sentences and the learning rate ``write_tiny_token_classifier`` trains with.
TRAIN_STEPS, TRAIN_LEARNING_RATE = 80, 3e-3


def ner_tokenizer(directory: Path | None = None):
    """A lower-casing WordPiece tokenizer over the words of ``synthetic_ner`` (surnames ending in "son"
    split into two pieces), written to ``directory`` (if given)."""
    from transformers import BertTokenizer

    words = {w for w in FIRST_NAMES + SURNAMES + CONTEXT if not w.endswith("son")}
    words |= {w for place in PLACES for w in place}
    tokens = list(SPECIALS) + sorted(words) + ["##son"]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(directory)
    return tokenizer


def _person(rng: random.Random) -> list[tuple[str, str]]:
    words = [(rng.choice(FIRST_NAMES).capitalize(), "B-PER")]
    if rng.random() < 0.6:
        words.append((rng.choice(SURNAMES).capitalize(), "I-PER"))
    return words


def _place(rng: random.Random) -> list[tuple[str, str]]:
    place = rng.choice(PLACES)
    return [(word.capitalize(), "B-LOC" if i == 0 else "I-LOC") for i, word in enumerate(place)]


def synthetic_ner(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """``n`` sentences of ``(word, tag)`` pairs: context words around one to three entities."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        sentence: list[tuple[str, str]] = []
        for _ in range(rng.randint(1, 3)):
            sentence += [(rng.choice(CONTEXT), "O") for _ in range(rng.randint(0, 3))]
            sentence += _person(rng) if rng.random() < 0.5 else _place(rng)
        sentence += [(rng.choice(CONTEXT), "O") for _ in range(rng.randint(0, 2))]
        sentences.append(sentence)
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    """``sentences`` as CoNLL-style text: ``word tag`` lines, a blank line between sentences."""
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n",
                    encoding="utf-8")
    return path


def tiny_token_classifier(family: str = "bert", vocab_size: int = 64, seed: int = 0):
    """A randomly initialised ``BertForTokenClassification`` (or DistilBERT's, or RoBERTa's: a user's own
    RoBERTa-layout tagger with ``ner_tokenizer``'s WordPiece vocabulary) with the ``TAGS`` labels."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    labels = dict(id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)})
    if family == "bert":
        config = tf.BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, max_position_embeddings=128, **labels)
        return tf.BertForTokenClassification(config).eval()
    if family == "distilbert":
        config = tf.DistilBertConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                     max_position_embeddings=128, **labels)
        return tf.DistilBertForTokenClassification(config).eval()
    if family == "roberta":  # positions start after the padding id (0 here, ner_tokenizer's [PAD])
        config = tf.RobertaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=130, type_vocab_size=1,
                                  pad_token_id=0, bos_token_id=2, eos_token_id=3, **labels)
        return tf.RobertaForTokenClassification(config).eval()
    raise ValueError(f"unknown family {family!r} (bert, distilbert, roberta)")


@functools.cache
def _trained_state(family: str, seed: int):
    from autocompress.measure import thread_count
    from autocompress.token_data import TaggedDataset
    from autocompress.training import encode, fine_tune

    tokenizer = ner_tokenizer()
    model = tiny_token_classifier(family, len(tokenizer), seed)
    sentences = synthetic_ner(320, seed=seed + 1)
    data = TaggedDataset.of([[w for w, _ in s] for s in sentences], [[TAGS.index(t) for _, t in s] for s in sentences])
    with thread_count(1):
        fine_tune(model, encode(tokenizer, data, 32), epochs=TRAIN_STEPS * 32 / len(data),
                  learning_rate=TRAIN_LEARNING_RATE, batch_size=32, seed=seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_tiny_token_classifier(directory: Path, family: str = "bert", seed: int = 0) -> Path:
    """A tiny token classifier fine-tuned on ``synthetic_ner`` (trained once per process), saved with
    its tokenizer as a checkpoint (safetensors) that ``--model`` takes."""
    tokenizer = ner_tokenizer(directory)
    model = tiny_token_classifier(family, len(tokenizer), seed)
    model.load_state_dict(_trained_state(family, seed))
    model.save_pretrained(directory)
    return directory
