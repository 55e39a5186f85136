"""Text augmentation for distillation: new inputs made from the labelled ones, labelled by the teacher.

TinyBERT (Jiao et al., 2020, "data augmentation") grows a small task set about twenty-fold by
replacing words of each sentence with close words, then distils on the new sentences: the
teacher's output is their label, so nobody labels them. Recovery then sees many more inputs than
a user labelled, which is what a small training set lacks.

TinyBERT draws a single-piece word's replacement from BERT's masked-LM predictions and other
words' from GloVe neighbours. A fine-tuned classifier has neither a masked-LM head nor GloVe, so
here every candidate word's replacement is one of its ``NEIGHBOURS`` nearest words by cosine
similarity of the **teacher's own input embeddings**. Candidates are the words of the texts that
the tokenizer keeps as one token (so they have one embedding row; a word split into pieces stays
as it is), and replacements come from the same in-domain words, so a trimmed vocabulary still
encodes every new sentence. Each candidate word is replaced with probability
``REPLACE_PROBABILITY`` (TinyBERT's p_t). Seeded: the same texts and seed give the same copies.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

from autocompress.data import UNLABELED, TextDataset

#: Probability that one candidate word of a copy is replaced (TinyBERT: 0.4).
REPLACE_PROBABILITY = 0.4
#: A word is replaced by one of this many nearest words (TinyBERT: 15).
NEIGHBOURS = 15
#: Rows of the similarity matrix computed at once (bounds memory: rows x words floats).
CHUNK = 1024

_WORDS = re.compile(r"[^\W\d_]+")


def single_token_words(tokenizer, texts: Sequence[str]) -> dict[str, int]:
    """Each distinct word (letters only, as written) of ``texts`` that ``tokenizer`` encodes as
    one token mid-sentence, with that token's id."""
    distinct = sorted({word for text in texts for word in _WORDS.findall(text)})
    if not distinct:
        return {}
    ids = tokenizer([f" {word}" for word in distinct], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    return {word: row[0] for word, row in zip(distinct, ids, strict=True) if len(row) == 1 and row[0] not in special}


def nearest_words(words: dict[str, int], embeddings: torch.Tensor, count: int = NEIGHBOURS) -> dict[str, list[str]]:
    """Each word's ``count`` nearest other words (cosine similarity of their rows of ``embeddings``,
    indexed by the ids in ``words``). Words sharing one token (``Good``/``good`` in an uncased
    vocabulary) are not each other's neighbours."""
    names = list(words)
    if len(names) < 2:
        return {}
    token_ids = torch.tensor([words[name] for name in names])
    vectors = torch.nn.functional.normalize(embeddings[token_ids].float(), dim=-1)
    k = min(count, len(names) - 1)
    neighbours: dict[str, list[str]] = {}
    with torch.no_grad():
        for start in range(0, len(names), CHUNK):
            similarity = vectors[start:start + CHUNK] @ vectors.T
            same = token_ids[start:start + CHUNK, None] == token_ids[None, :]
            similarity[same] = float("-inf")
            best = similarity.topk(k, dim=-1)
            for row, (values, indices) in enumerate(zip(best.values, best.indices, strict=True)):
                chosen = [names[i] for value, i in zip(values.tolist(), indices.tolist(), strict=True)
                          if value != float("-inf")]
                if chosen:
                    neighbours[names[start + row]] = chosen
    return neighbours


def replace_words(text: str, neighbours: dict[str, list[str]], rng: random.Random,
                  probability: float = REPLACE_PROBABILITY) -> str:
    """``text`` with each word that has neighbours replaced by one of them with ``probability``."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        options = neighbours.get(word)
        if options and rng.random() < probability:
            return rng.choice(options)
        return word

    return _WORDS.sub(swap, text)


def augmented_copies(dataset: TextDataset, count: int, tokenizer, embeddings: torch.Tensor,
                     token_map: torch.Tensor | None = None, seed: int = 0) -> TextDataset:
    """``count`` word-replaced copies of ``dataset``'s texts (each text in turn, then again), unlabeled.

    ``embeddings`` is the teacher's input-embedding table; ``token_map`` translates ``tokenizer``'s
    ids to the teacher's when a step changed the vocabulary (``ApplyContext.token_map``). For pairs,
    both texts of a copy are augmented.
    """
    if count <= 0 or len(dataset) == 0:
        return TextDataset([], [], None if dataset.pairs is None else [])
    words = single_token_words(tokenizer, dataset.every_text())
    if token_map is not None:
        words = {word: int(token_map[i]) for word, i in words.items()}
    neighbours = nearest_words(words, embeddings)
    rng = random.Random(seed)
    texts, pairs = [], []
    for n in range(count):
        i = n % len(dataset)
        texts.append(replace_words(dataset.texts[i], neighbours, rng))
        if dataset.pairs is not None:
            pairs.append(replace_words(dataset.pairs[i], neighbours, rng))
    return TextDataset(texts, [UNLABELED] * count, pairs if dataset.pairs is not None else None)
