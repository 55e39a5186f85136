"""Token-classification (NER) data: sentences of words with a BIO tag per word, read, checked, split
and encoded with the tags aligned to the tokenizer's word pieces.

Two file formats, and saved datasets:

- **CoNLL-style text** (``.conll``, ``.txt``, ``.tsv``, ``.iob``, ``.bio``): one word per line, its tag
  in the last column (other columns, as CoNLL-2003's part-of-speech and chunk tags, are ignored), a
  blank line between sentences; ``-DOCSTART-`` lines are skipped. Columns are separated by tabs when
  the line has any (a word may then hold spaces), otherwise by whitespace.
- **JSON lines** (``.jsonl``, ``.ndjson``): one sentence per line, an object with a list of words
  and a list of tags of the same length (keys ``tokens`` and ``tags``; ``--text-column`` and
  ``--label-column`` name others).
- **A saved ``datasets`` directory** (``save_to_disk``), as NER datasets on the Hub come: a list of
  words and a list of tags per row (``tokens`` and ``tags``, or ``ner_tags`` when there is no
  ``tags``); tag ids of a ``ClassLabel`` feature are read as its names. Its own ``train``,
  ``validation`` and ``test`` splits are used; a missing one is carved from train.

Every tag must be in the BIO scheme (``O``, ``B-TYPE``, ``I-TYPE``) and be one of the model's own
labels (its ``id2label``): the tags index the model's outputs, so the model fixes their order.
Problems are a ``DataError`` naming the file and line, raised before anything is loaded or trained.
A file's sentences are split at random with a seed: 80% train, 10% validation, 10% test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autocompress.data import UNLABELED, TaskData, TextDataset, json_records
from autocompress.entities import is_bio_tag
from autocompress.errors import DataError

CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".iob", ".bio")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: Suffixes that can only hold tagged words (no table of texts and labels has them).
TAGGED_ONLY_SUFFIXES = (".conll", ".iob", ".bio")
DOCSTART = "-DOCSTART-"
#: JSON lines keys read when ``--text-column`` / ``--label-column`` keep their defaults.
TOKENS_KEY, TAGS_KEY = "tokens", "tags"
#: The tags column of NER datasets on the Hub (CoNLL-2003, WikiANN), read when there is no ``tags``.
DATASETS_TAGS_KEY = "ner_tags"
#: Share of train held out for a missing validation (or test) split of a saved dataset, as ``hf_data`` does.
HOLD_OUT = 1 / 9


@dataclass(frozen=True)
class TaggedDataset(TextDataset):
    """Sentences as words, and per sentence the tag index (0..K-1) of each word (``labels[i][j]``:
    word ``j`` of sentence ``i``). ``texts`` holds each sentence's words joined by spaces (what
    vocabulary statistics read); ``autocompress.training.encode`` encodes the words themselves."""

    words: list[list[str]] = field(default_factory=list)

    def __post_init__(self):
        if len(self.words) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.words)} sentences of words")
        for index, (words, tags) in enumerate(zip(self.words, self.labels, strict=True)):
            if len(words) != len(tags):
                raise ValueError(f"sentence {index}: {len(words)} words but {len(tags)} tags")

    @classmethod
    def of(cls, words: Sequence[Sequence[str]], tags: Sequence[Sequence[int]]) -> TaggedDataset:
        """Sentences of ``words`` with their tag indices."""
        return cls([" ".join(sentence) for sentence in words], [[int(t) for t in sentence] for sentence in tags],
                   None, [list(sentence) for sentence in words])

    @classmethod
    def unlabeled(cls, texts: Sequence[str]) -> TaggedDataset:
        """Untagged sentences (``--unlabeled`` for a token classifier): each text's words split at
        whitespace, every tag ``UNLABELED`` (distillation learns them from the teacher alone)."""
        words = [text.split() for text in texts if text.split()]
        return cls.of(words, [[UNLABELED] * len(sentence) for sentence in words])

    @property
    def scores(self) -> bool:
        return False

    def subset(self, indices: Sequence[int]) -> TaggedDataset:
        indices = [int(i) for i in indices]
        return TaggedDataset.of([self.words[i] for i in indices], [self.labels[i] for i in indices])

    def concat(self, *others: TextDataset) -> TaggedDataset:
        if not all(isinstance(other, TaggedDataset) for other in others):
            raise ValueError("cannot join tagged sentences with untagged texts")
        parts = (self, *others)
        return TaggedDataset.of([w for part in parts for w in part.words], [t for part in parts for t in part.labels])


@dataclass(frozen=True)
class _Sentence:
    words: list[str]
    tags: list[str]
    places: list[str]  # where each tag is, for messages: "line 3", or "split 'train' row 7"


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None


def _read_conll(path: Path) -> list[_Sentence]:
    sentences, current = [], _Sentence([], [], [])
    for number, line in enumerate(_text(path).splitlines(), start=1):
        # Tab-separated columns may hold words with spaces; otherwise any whitespace separates them.
        columns = [c.strip() for c in line.split("\t") if c.strip()] if "\t" in line else line.split()
        if not columns or columns[0] == DOCSTART:
            if current.words:
                sentences.append(current)
                current = _Sentence([], [], [])
            continue
        if len(columns) < 2:
            raise DataError(f"{path}: line {number}: {line.strip()!r} has a word but no tag; each line holds a word "
                            "and its tag separated by whitespace (a blank line between sentences)")
        current.words.append(columns[0])
        current.tags.append(columns[-1])
        current.places.append(f"line {number}")
    if current.words:
        sentences.append(current)
    return sentences


def _read_jsonl(path: Path, tokens_key: str, tags_key: str) -> list[_Sentence]:
    sentences = []
    for number, record in json_records(path, _text(path)):
        for key, option in ((tokens_key, "--text-column"), (tags_key, "--label-column")):
            if key not in record:
                raise DataError(f"{path}: line {number} has no '{key}' (keys: {', '.join(record) or 'none'}); "
                                f"set {option}")
            value = record[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"{path}: line {number}: '{key}' must be a list of strings, got {value!r:.80}")
        words, tags = record[tokens_key], record[tags_key]
        if len(words) != len(tags):
            raise DataError(f"{path}: line {number}: {len(words)} tokens but {len(tags)} tags; every token needs "
                            "one tag")
        if not words:
            raise DataError(f"{path}: line {number}: an empty sentence (no tokens)")
        sentences.append(_Sentence(list(words), list(tags), [f"line {number}"] * len(words)))
    return sentences


def read_tagged(path: str | Path, tokens_key: str = TOKENS_KEY, tags_key: str = TAGS_KEY) -> list[_Sentence]:
    """The sentences of a CoNLL-style or JSON lines file (chosen by suffix), each with its tags as
    written; a DataError naming the file (and line) for a missing, empty or malformed file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: token-classification data is a file (CoNLL-style text or JSON lines), not a "
                        "directory")
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        sentences = _read_conll(path)
    elif suffix in JSONL_SUFFIXES:
        sentences = _read_jsonl(path, tokens_key, tags_key)
    else:
        raise DataError(f"{path}: unsupported file type '{path.suffix}' for token classification (supported: "
                        f"{', '.join(CONLL_SUFFIXES + JSONL_SUFFIXES)})")
    if not sentences:
        raise DataError(f"{path}: no sentences (expected words with tags)")
    return sentences


def is_tagged_data(path: str | Path, tokens_key: str = TOKENS_KEY) -> bool:
    """Whether ``--data`` holds tagged words rather than labelled texts: a CoNLL-style file (``.conll``,
    ``.iob``, ``.bio``), a JSON lines file whose first record's ``tokens_key`` is a list of words, or a
    saved ``datasets`` directory whose train split's ``tokens_key`` is (what decides the task when
    ``--model`` is a base model, which has no head to say it)."""
    path = Path(path)
    if path.is_dir():
        from autocompress.hf_data import dataset_splits, read_saved_dataset

        try:
            train = dataset_splits(read_saved_dataset(path), str(path))["train"]
        except DataError:
            return False  # not a readable saved dataset: the text-data reader says why
        return tokens_key in train.column_names and len(train) > 0 and isinstance(train[0][tokens_key], list)
    suffix = path.suffix.lower()
    if suffix in TAGGED_ONLY_SUFFIXES:
        return True
    if suffix in JSONL_SUFFIXES and path.is_file():
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = next((line for line in handle if line.strip()), "")
        try:
            record = json.loads(first)
        except ValueError:
            return False  # not JSON lines: the reader says where
        return isinstance(record, dict) and isinstance(record.get(tokens_key), list)
    return False


def data_tags(groups: Sequence[tuple[str, Sequence[_Sentence]]], source: str) -> list[str]:
    """The BIO tags a token classifier fine-tuned on these sentences gets, in id order: ``O``, then ``B-``
    and ``I-`` of each entity type they name (sorted). ``groups``: (where they come from, for messages;
    the sentences), all from ``source``. A DataError names the place of the first tag that is not BIO, or
    says every tag is O."""
    kinds = set()
    for source, sentences in groups:
        for sentence in sentences:
            for tag, place in zip(sentence.tags, sentence.places, strict=True):
                if not is_bio_tag(tag):
                    raise DataError(f"{source}: {place}: tag {tag!r} is not in the BIO scheme; {_scheme_hint(tag)}")
                if tag != "O":
                    kinds.add(tag.partition("-")[2])
    if not kinds:
        raise DataError(f"{source}: every tag is O; a token classifier needs tagged entities (B-TYPE, I-TYPE) to learn")
    return ["O", *(f"{prefix}-{kind}" for kind in sorted(kinds) for prefix in ("B", "I"))]


def check_model_tags(tag_names: Sequence[str], config_path: Path) -> None:
    """A token classifier's labels (its ``id2label``, in id order) must be BIO tags; an InputError naming
    ``config_path`` otherwise."""
    bad = [name for name in tag_names if not is_bio_tag(name)]
    if bad:
        raise DataError(f"{config_path}: id2label holds {', '.join(map(repr, bad[:5]))}, which are not BIO tags "
                        "(O, B-TYPE, I-TYPE); a token classifier's id2label must name its tags")


def _scheme_hint(tag: str) -> str:
    prefix = tag.partition("-")[0]
    if prefix in ("E", "S", "L", "U"):
        return f"'{prefix}-' belongs to the BIOES/BILOU schemes, which are not supported: convert the tags to BIO"
    return "tags must be O, B-TYPE or I-TYPE"


def tag_indices(sentences: Sequence[_Sentence], tag_names: Sequence[str], source: str) -> list[list[int]]:
    """Each sentence's tags as indices into ``tag_names`` (the model's labels); a DataError naming the
    line of the first tag that is not BIO or that the model does not know."""
    index = {name: i for i, name in enumerate(tag_names)}
    result = []
    for sentence in sentences:
        for tag, place in zip(sentence.tags, sentence.places, strict=True):
            if not is_bio_tag(tag):
                raise DataError(f"{source}: {place}: tag {tag!r} is not in the BIO scheme; {_scheme_hint(tag)}")
            if tag not in index:
                raise DataError(f"{source}: {place}: tag {tag!r} is not one of the model's labels "
                                f"({', '.join(tag_names)}); the model must have been trained with this tag")
        result.append([index[tag] for tag in sentence.tags])
    return result


def load_tagged_data(path: str | Path, tag_names: Sequence[str] | None, seed: int = 0,
                     tokens_key: str = TOKENS_KEY, tags_key: str = TAGS_KEY,
                     fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> TaskData:
    """A token-classification file read, its tags checked against ``tag_names`` (the model's labels in
    id order; None: a new model's, ``data_tags`` of these sentences) and its sentences split at random
    with ``seed`` (train / validation / test); a saved ``datasets`` directory keeps its own splits."""
    if Path(path).is_dir():
        return _load_saved(Path(path), tag_names, seed, tokens_key, tags_key)
    sentences = read_tagged(path, tokens_key, tags_key)
    if tag_names is None:
        tag_names = data_tags([(str(path), sentences)], str(path))
    tags = tag_indices(sentences, tag_names, str(path))
    if len(sentences) < 3:
        raise DataError(f"{path}: {len(sentences)} sentence(s); at least 3 are needed (one per train/validation/"
                        "test split)")
    everything = TaggedDataset.of([s.words for s in sentences], tags)
    order = np.random.default_rng(seed).permutation(len(sentences)).tolist()
    n_val = max(1, round(len(order) * fractions[1]))
    n_test = max(1, round(len(order) * fractions[2]))
    n_train = len(order) - n_val - n_test
    cuts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
    return TaskData(*(everything.subset(part) for part in cuts), label_names=list(tag_names))


def _dataset_sentences(split, where: str, tokens_key: str, tags_key: str) -> list[_Sentence]:
    """The rows of one ``datasets`` split as sentences (``ClassLabel`` tag ids read as their names)."""
    import datasets

    for key, option in ((tokens_key, "--text-column"), (tags_key, "--label-column")):
        if key not in split.column_names:
            raise DataError(f"{where}: no column '{key}' (columns: {', '.join(split.column_names)}); set {option}")
    if len(split) == 0:
        raise DataError(f"{where}: the split is empty")
    feature = getattr(split.features[tags_key], "feature", None)
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    sentences = []
    for row, (words, tags) in enumerate(zip(split[tokens_key], split[tags_key], strict=True)):
        if not isinstance(words, list) or not isinstance(tags, list):
            raise DataError(f"{where} row {row}: '{tokens_key}' and '{tags_key}' must be lists")
        if len(words) != len(tags):
            raise DataError(f"{where} row {row}: {len(words)} tokens but {len(tags)} tags; every token needs one tag")
        if not words:
            raise DataError(f"{where} row {row}: an empty sentence (no tokens)")
        tags = [names[t] if names is not None and isinstance(t, int) and 0 <= t < len(names) else str(t)
                for t in tags]
        sentences.append(_Sentence([str(w) for w in words], tags, [f"row {row}"] * len(words)))
    return sentences


def _load_saved(path: Path, tag_names: Sequence[str] | None, seed: int, tokens_key: str, tags_key: str
                ) -> TaskData:
    from autocompress.hf_data import dataset_splits, read_saved_dataset

    splits = dataset_splits(read_saved_dataset(path), str(path))
    if tags_key == TAGS_KEY and TAGS_KEY not in splits["train"].column_names:
        tags_key = DATASETS_TAGS_KEY
    read = {f"{path}: split '{name}'": (name, _dataset_sentences(split, f"{path}: split '{name}'", tokens_key,
                                                                  tags_key)) for name, split in splits.items()}
    if tag_names is None:
        tag_names = data_tags([(where, sentences) for where, (_, sentences) in read.items()], str(path))
    parts = {}
    for where, (name, sentences) in read.items():
        parts[name] = TaggedDataset.of([s.words for s in sentences], tag_indices(sentences, tag_names, where))
    rng = np.random.default_rng(seed)
    for missing in ("validation", "test"):
        if missing not in parts:  # carved from train only, as hf_data does for classification
            train = parts["train"]
            if len(train) < 2:
                raise DataError(f"{path}: split 'train' has {len(train)} sentence(s); a {missing} split is carved "
                                "from it, which needs at least 2")
            order = rng.permutation(len(train)).tolist()
            held = max(1, round(len(train) * HOLD_OUT))
            parts[missing], parts["train"] = train.subset(order[:held]), train.subset(order[held:])
    return TaskData(parts["train"], parts["validation"], parts["test"], label_names=list(tag_names))


def encode_tagged(tokenizer, dataset: TaggedDataset, max_length: int):
    """``dataset``'s sentences tokenised as running text (the words joined by single spaces, as the
    model read text in pre-training), truncated to ``max_length`` tokens; each word's tag labels its
    first sub-token, and ``IGNORED`` every other position (later sub-tokens, special tokens, a
    sentencepiece word-start token on its own, padding), so the labels stay aligned however the
    words split or are cut.

    Words are found back from the tokens' character offsets, not from ``is_split_into_words``: a
    byte-level BPE tokenizer (RoBERTa, GPT-2) tokenises pre-split words without the space before
    them unless it was built with ``add_prefix_space``, so it would see " Paris" in running text but
    "Paris" here."""
    import torch

    from autocompress.training import IGNORED, TaggedEncoded

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"token classification needs a fast (Rust) tokenizer to align tags with word pieces; "
                         f"{type(tokenizer).__name__} is not one")
    texts, owners = [], []
    for words in dataset.words:
        owner: list[int | None] = []  # the word each character belongs to (None: the spaces between)
        for index, word in enumerate(words):
            owner += ([None] if index else []) + [index] * len(word)
        texts.append(" ".join(words))
        owners.append(owner)
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    rows = encoded["input_ids"]
    labels = torch.full((len(rows), max((len(r) for r in rows), default=0)), IGNORED, dtype=torch.long)
    for i, (tags, owner) in enumerate(zip(dataset.labels, owners, strict=True)):
        previous = None
        for position, (begin, end) in enumerate(encoded["offset_mapping"][i]):
            word = next((owner[c] for c in range(begin, min(end, len(owner))) if owner[c] is not None), None)
            if word is not None and word != previous:
                labels[i, position] = tags[word]
                previous = word
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TaggedEncoded(rows, labels, pad, None)

