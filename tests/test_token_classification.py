"""Token classification (NER): tagged-word data, word-piece alignment, entity-level F1, per-token
losses in every technique, and a search through the CLI whose best model reloads and exports."""

import copy
import json
import re
import subprocess
import sys

import numpy
import pandas as pd
import pytest
import torch

from autocompress import distill
from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.cli import main
from autocompress.entities import EntityF1, chunks, entity_f1
from autocompress.errors import DataError, InputError
from autocompress.int8_sensitivity import _divergences, layer_sensitivity
from autocompress.measure import thread_count
from autocompress.plugin_manager import build_host
from autocompress.plugins.head_pruning import gradient_head_scores
from autocompress.plugins.local_task import LocalTask
from autocompress.task import TaskOptions, load_task
from autocompress.technique import ApplyContext, PlanStep
from autocompress.testing import fresh_process_outputs
from autocompress.testing.tiny_ner import (
    TAGS,
    ner_tokenizer,
    synthetic_ner,
    tiny_token_classifier,
    write_conll,
    write_tiny_token_classifier,
)
from autocompress.token_data import TaggedDataset, load_tagged_data
from autocompress.training import IGNORED, Encoded, TaggedEncoded, encode, task_loss


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    """A tiny BERT token classifier fine-tuned on synthetic NER, and a CoNLL file of new sentences in
    which every seventh sentence's people are tagged as places (annotation noise the teacher cannot
    follow, so its entity F1 is high but not perfect, and partial matches are in play)."""
    root = tmp_path_factory.mktemp("ner")
    with thread_count(1):
        write_tiny_token_classifier(root / "model")
    sentences = synthetic_ner(160, seed=5)
    noisy = [[(w, t.replace("PER", "LOC")) for w, t in s] if i % 7 == 0 else s for i, s in enumerate(sentences)]
    write_conll(root / "data.conll", noisy)
    return root


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -- the metric -------------------------------------------------------------------------------
def test_chunks_follow_seqeval_default_bio_rules():
    assert chunks(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert chunks(["I-PER", "I-PER", "O"]) == [("PER", 0, 1)]  # I- without B- starts a chunk
    assert chunks(["O", "I-LOC", "O"]) == [("LOC", 1, 1)]
    assert chunks(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]  # a type change ends a chunk
    assert chunks(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
    assert chunks(["O", "O"]) == [] and chunks([]) == []
    with pytest.raises(ValueError, match="'S-PER' is not a BIO tag"):
        chunks(["O", "S-PER"])


def test_entity_f1_counts_an_entity_only_with_its_exact_span_and_type():
    truth = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert entity_f1(truth, truth) == 1.0
    # Partial span: the person is missed (and its one-word guess is wrong); the place is found: P = R = 1/2.
    assert entity_f1([["B-PER", "O", "O", "B-LOC"]], truth) == pytest.approx(0.5)
    # Right span, wrong type: not a hit either.
    assert entity_f1([["B-LOC", "I-LOC", "O", "B-LOC"]], truth) == pytest.approx(0.5)
    # Too long a span is no hit.
    assert entity_f1([["B-PER", "I-PER", "I-PER", "B-LOC"]], truth) == pytest.approx(0.5)
    assert entity_f1([["O", "O", "O", "O"]], truth) == 0.0
    # Micro average over sentences: 1 hit of 1 guess and 2 entities -> P 1, R 1/2, F1 2/3.
    assert entity_f1([["B-PER"], ["O", "O"]], [["B-PER"], ["B-LOC", "O"]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predicted sentences but 1"):
        entity_f1([["O"], ["O"]], [["O"]])


# -- data -------------------------------------------------------------------------------------
def test_conll_and_json_lines_read_the_same_sentences(tmp_path):
    (tmp_path / "a.conll").write_text(
        "-DOCSTART- -X- -X- O\n\nAnna NNP B-NP B-PER\nSmith NNP I-NP I-PER\nmet VBD B-VP O\n\n\n"
        "Paris NNP B-NP B-LOC\n\nthe DT O O\nfriend NN O O\n\nRome NNP O B-LOC\n", encoding="utf-8")
    _jsonl(tmp_path / "a.jsonl", [{"tokens": ["Anna", "Smith", "met"], "tags": ["B-PER", "I-PER", "O"]},
                                  {"tokens": ["Paris"], "tags": ["B-LOC"]}, {"tokens": ["the", "friend"],
                                                                             "tags": ["O", "O"]},
                                  {"tokens": ["Rome"], "tags": ["B-LOC"]}])
    _jsonl(tmp_path / "b.jsonl", [{"words": ["Anna", "Smith", "met"], "ner": ["B-PER", "I-PER", "O"]},
                                  {"words": ["Paris"], "ner": ["B-LOC"]}, {"words": ["the", "friend"],
                                                                          "ner": ["O", "O"]},
                                  {"words": ["Rome"], "ner": ["B-LOC"]}])
    conll = load_tagged_data(tmp_path / "a.conll", TAGS, seed=1)
    every = lambda data: sorted(  # noqa: E731
        (tuple(w), tuple(t)) for split in (data.train, data.validation, data.test)
        for w, t in zip(split.words, split.labels, strict=True))
    assert every(conll) == sorted([(("Anna", "Smith", "met"), (1, 2, 0)), (("Paris",), (3,)),
                                   (("the", "friend"), (0, 0)), (("Rome",), (3,))])
    assert every(load_tagged_data(tmp_path / "a.jsonl", TAGS, seed=1)) == every(conll)
    assert every(load_tagged_data(tmp_path / "b.jsonl", TAGS, tokens_key="words", tags_key="ner")) == every(conll)
    assert conll.label_names == list(TAGS) and not conll.regression
    # Tab-separated columns keep a word's inner space.
    (tmp_path / "t.tsv").write_text("New York\tB-LOC\nmet\tO\n\nAnna\tB-PER\n\nRome\tB-LOC\n", encoding="utf-8")
    assert sorted(w for s in every(load_tagged_data(tmp_path / "t.tsv", TAGS)) for w in s[0]) == [
        "Anna", "New York", "Rome", "met"]


def _saved_ner_dataset(path, splits, names):
    """A DatasetDict of ``tokens`` and ``ner_tags`` (a ClassLabel over ``names``), as NER datasets on the Hub."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(names)))})
    datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"tokens": [[w for w, _ in s] for s in sentences],
                                           "ner_tags": [[names.index(t) for _, t in s] for s in sentences]},
                                          features=features)
        for split, sentences in splits.items()}).save_to_disk(str(path))
    return path


def test_a_saved_datasets_directory_keeps_its_splits_and_reads_class_label_tags(ner, tmp_path):
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # another order than the model's: tags go by name
    train, validation = synthetic_ner(30, seed=8), synthetic_ner(6, seed=9)
    path = _saved_ner_dataset(tmp_path / "ds", {"train": train, "validation": validation}, names)
    data = load_task(LocalTask(TaskOptions(model=ner / "model", data=path))).data
    assert [list(w) for w in data.validation.words] == [[w for w, _ in s] for s in validation]
    assert [[TAGS[i] for i in tags] for tags in data.validation.labels] == [[t for _, t in s] for s in validation]
    assert len(data.test) == round(30 / 9) and len(data.train) + len(data.test) == 30  # test carved from train
    bad = _saved_ner_dataset(tmp_path / "bad", {"train": [[("Acme", "B-ORG")]] * 3}, ["O", "B-ORG"])
    with pytest.raises(DataError, match=r"bad: split 'train': row 0: tag 'B-ORG' is not one of the model's labels"):
        LocalTask(TaskOptions(model=ner / "model", data=bad)).validate()


def test_sentences_are_split_80_10_10_with_a_seed(tmp_path):
    write_conll(tmp_path / "d.conll", synthetic_ner(50, seed=3))
    data = load_tagged_data(tmp_path / "d.conll", TAGS, seed=4)
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 5, 5)
    assert isinstance(data.train, TaggedDataset)
    assert load_tagged_data(tmp_path / "d.conll", TAGS, seed=4) == data
    assert load_tagged_data(tmp_path / "d.conll", TAGS, seed=5) != data
    together = sorted(" ".join(w) for split in (data.train, data.validation, data.test) for w in split.words)
    assert together == sorted(" ".join(w for w, _ in s) for s in synthetic_ner(50, seed=3))


@pytest.mark.parametrize(("name", "content", "message"), [
    ("no_tag.conll", "Anna B-PER\nmet O\nParis\n", r"no_tag.conll: line 3: 'Paris' has a word but no tag"),
    ("mismatch.jsonl",
     '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["Anna", "met", "Rome"], "tags": ["B-PER", "O"]}\n',
     r"mismatch.jsonl: line 2: 3 tokens but 2 tags"),
    ("empty.conll", "", r"empty.conll: no sentences"),
    ("docstart.conll", "-DOCSTART- O\n\n\n", r"docstart.conll: no sentences"),
    ("unknown.conll", "Anna B-PER\n\nAcme B-ORG\nmet O\n", r"unknown.conll: line 3: tag 'B-ORG' is not one of the "
                                                          r"model's labels \(O, B-PER, I-PER, B-LOC, I-LOC\)"),
    ("bioes.conll", "met O\nAnna S-PER\n", r"bioes.conll: line 2: tag 'S-PER' is not in the BIO scheme; 'S-' "
                                           r"belongs to the BIOES/BILOU schemes"),
    ("keys.jsonl", '{"text": ["a"], "tags": ["O"]}\n', r"keys.jsonl: line 1 has no 'tokens' \(keys: text, tags\); "
                                                       r"set --text-column"),
    ("short.conll", "Anna B-PER\n\nRome B-LOC\n", r"short.conll: 2 sentence\(s\); at least 3"),
    ("data.csv", "text,label\na,O\n", r"data.csv: unsupported file type '.csv' for token classification"),
])
def test_bad_tagged_data_is_refused_naming_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_tagged_data(tmp_path / name, TAGS)


def test_bad_input_stops_the_cli_with_exit_2_before_training(ner, tmp_path, capsys):
    (tmp_path / "bad.conll").write_text("Anna B-PER\n\nAcme B-ORG\n\nRome B-LOC\n", encoding="utf-8")
    code = main(["search", "--model", str(ner / "model"), "--data", str(tmp_path / "bad.conll"), "--out",
                 str(tmp_path / "run"), "--trials", "1", "--no-progress"])
    assert code == 2
    assert "bad.conll: line 3: tag 'B-ORG' is not one of the model's labels" in capsys.readouterr().err
    assert not (tmp_path / "run" / "trials.csv").exists()


def test_the_model_must_be_a_bio_token_classifier(ner, tmp_path):
    options = dict(data=ner / "data.conll")
    # A token classifier whose id2label names no tags.
    model = tmp_path / "unnamed"
    write_tiny_token_classifier(model)
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(len(TAGS))}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"unnamed/config.json: id2label holds 'LABEL_0'.*not BIO tags"):
        LocalTask(TaskOptions(model=model, **options)).validate()
    # A sequence classifier with tagged words: it has a head already, and not a tagger's (a base model would be
    # fine-tuned into one: tests/test_teacher_from_base.py).
    from autocompress.testing import write_tiny_checkpoint

    classifier = write_tiny_checkpoint(tmp_path / "classifier")
    with pytest.raises(InputError, match=r"holds tagged words \(token classification\), which needs a token "
                                         r"classifier .* or a base model .* BertForSequenceClassification"):
        LocalTask(TaskOptions(model=classifier, **options)).validate()
    records = [{"text": "Anna met", "label": ["B-PER", "O"]}] * 6
    with pytest.raises(DataError, match=r"lists.jsonl: labels are lists \(a tag per token\?\); token classification "
                                        r"needs"):
        LocalTask(TaskOptions(model=classifier, data=_jsonl(tmp_path / "lists.jsonl", records))).validate()
    # Options that have no meaning for a token task.
    with pytest.raises(InputError, match="--metric 'accuracy': a token-classification task is scored by entity_f1"):
        LocalTask(TaskOptions(model=ner / "model", metric="accuracy", **options)).validate()
    with pytest.raises(InputError, match="--text-pair-column b: not supported for token classification"):
        LocalTask(TaskOptions(model=ner / "model", text_pair_column="b", **options)).validate()
    assert LocalTask(TaskOptions(model=ner / "model", **options)).quality_metric() == EntityF1(TAGS)


def test_unlabeled_sentences_of_a_tagger_are_its_words_with_every_tag_left_to_the_teacher(ner, tmp_path):
    from autocompress.data import UNLABELED
    from autocompress.task import unlabeled_texts

    (tmp_path / "more.txt").write_text("Anna met Rome\n\nomar  went to new york\n", encoding="utf-8")
    options = TaskOptions(model=ner / "model", data=ner / "data.conll", unlabeled=tmp_path / "more.txt")
    task = load_task(LocalTask(options), unlabeled_texts(options))
    unlabeled = task.data.unlabeled
    assert isinstance(unlabeled, TaggedDataset)
    assert unlabeled.words == [["Anna", "met", "Rome"], ["omar", "went", "to", "new", "york"]]
    assert unlabeled.labels == [[UNLABELED] * 3, [UNLABELED] * 5]
    encoded = encode(ner_tokenizer(), unlabeled, 32)
    assert encoded.labels[0].tolist()[:5] == [IGNORED, UNLABELED, UNLABELED, UNLABELED, IGNORED]
    # Recovery trains on them too (the teacher their only label), not on the tagged sentences alone.
    context = _context(task.teacher, task.tokenizer, task.data)
    settings = distill.RecoverySettings(learning_rate=1e-3, epochs=1.0, batch_size=8, unlabeled=True)
    assert len(distill.training_set(context, settings)) == len(task.data.train) + 2
    student = copy.deepcopy(task.teacher)
    with thread_count(1):
        distill.train_student(student, context, settings)
    assert all(torch.isfinite(p).all() for p in student.parameters())


# -- encoding and losses ----------------------------------------------------------------------
def test_each_word_is_labelled_on_its_first_word_piece_and_truncation_keeps_the_alignment():
    tokenizer = ner_tokenizer()
    data = TaggedDataset.of([["Anna", "Johnson", "visited", "New", "York"], ["Rome"]], [[1, 2, 0, 3, 4], [3]])
    encoded = encode(tokenizer, data, 64)
    pieces = tokenizer.convert_ids_to_tokens(encoded.input_ids[0])
    assert pieces == ["[CLS]", "anna", "john", "##son", "visited", "new", "york", "[SEP]"]
    assert encoded.labels[0].tolist() == [IGNORED, 1, 2, IGNORED, 0, 3, 4, IGNORED]
    assert encoded.labels[1].tolist() == [IGNORED, 3, IGNORED] + [IGNORED] * 5
    # Cut after "##son": the words that fit keep their tags, the cut ones have none.
    short = encode(tokenizer, data, 5)
    assert tokenizer.convert_ids_to_tokens(short.input_ids[0]) == ["[CLS]", "anna", "john", "##son", "[SEP]"]
    assert short.labels[0].tolist() == [IGNORED, 1, 2, IGNORED, IGNORED]
    # A batch's labels are as wide as its longest row.
    (_, labels), = list(encoded.subset([1]).batches(8))
    assert labels.tolist() == [[IGNORED, 3, IGNORED]]


def test_a_byte_level_bpe_tokenizer_sees_the_words_as_running_text_with_their_spaces(tmp_path):
    """RoBERTa's and GPT-2's tokenizers mark a word after a space (" film" -> "Ġfilm"); pre-split words
    lose that space unless the tokenizer was built with add_prefix_space, and the model would read
    words it never saw in pre-training. The encoding is the running text's, tags on each word's first piece."""
    from autocompress.testing.tiny import tiny_bpe_tokenizer

    tokenizer = tiny_bpe_tokenizer(tmp_path / "bpe")
    words = ["the", "film", "was", "good"]
    encoded = encode(tokenizer, TaggedDataset.of([words], [[1, 2, 3, 4]]), 64)
    assert encoded.input_ids[0] == tokenizer(" ".join(words))["input_ids"]
    assert "Ġfilm" in tokenizer.convert_ids_to_tokens(encoded.input_ids[0])
    pieces = tokenizer.convert_ids_to_tokens(encoded.input_ids[0])
    tagged = [(piece, tag) for piece, tag in zip(pieces, encoded.labels[0].tolist(), strict=True) if tag != IGNORED]
    assert [tag for _, tag in tagged] == [1, 2, 3, 4] and tagged[:2] == [("the", 1), ("Ġfilm", 2)]


def test_the_task_loss_counts_only_labelled_tokens():
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[IGNORED, 1, 0, IGNORED], [IGNORED, 3, IGNORED, IGNORED]])
    kept = labels != IGNORED
    expected = torch.nn.functional.cross_entropy(logits[kept], labels[kept])
    tagged = TaggedEncoded([[1, 2, 3, 4], [1, 2]], labels, 0)  # the data's type owns its loss
    assert float(tagged.task_loss(logits, labels)) == pytest.approx(float(expected))
    assert float(tagged.task_loss(logits, labels, reduction="sum")) == pytest.approx(float(expected) * 3, rel=1e-5)
    # The per-example loss of class labels refuses these tensors: shapes do not decide the task.
    with pytest.raises((RuntimeError, ValueError)):
        task_loss(logits, labels)


def test_distillation_of_tokens_averages_over_labelled_tokens_only():
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    labels = torch.tensor([[IGNORED, 2, IGNORED], [IGNORED, 0, 4]])
    kept = labels != IGNORED
    soft = distill.soft_label_losses(student[kept], teacher[kept], 2.0)
    hard = torch.nn.functional.cross_entropy(student[kept], labels[kept], reduction="none")
    expected = (0.7 * soft + 0.3 * hard).mean()
    loss = distill.logit_loss_for(TaggedEncoded([[1, 2, 3], [1, 2, 3]], labels, 0))
    assert loss is distill.tagged_distillation_loss
    assert float(loss(student, teacher, labels, 2.0, 0.3)) == pytest.approx(float(expected))
    # Whatever padding or later word pieces hold does not count.
    changed = student.clone()
    changed[~kept] = 100.0
    assert float(loss(changed, teacher, labels, 2.0, 0.3)) == pytest.approx(float(expected))
    # A word nobody tagged (an --unlabeled sentence's) counts with the soft-label loss alone.
    from autocompress.data import UNLABELED

    unlabeled = torch.tensor([[IGNORED, 2, IGNORED], [IGNORED, UNLABELED, 4]])
    mixed = torch.stack([0.7 * soft[0] + 0.3 * hard[0], soft[1], 0.7 * soft[2] + 0.3 * hard[2]]).mean()
    assert float(loss(student, teacher, unlabeled, 2.0, 0.3)) == pytest.approx(float(mixed))


def _context(model, tokenizer, data):
    return ApplyContext(adapter=adapter_for(model, build_host().architectures), tokenizer=tokenizer, data=data,
                        teacher=copy.deepcopy(model), max_length=32, quality=EntityF1(TAGS).score)


def _tagged_task(n: int, seed: int):
    from autocompress.data import TaskData

    sentences = synthetic_ner(n, seed=seed)
    everything = TaggedDataset.of([[w for w, _ in s] for s in sentences], [[TAGS.index(t) for _, t in s]
                                                                           for s in sentences])
    third = n // 3
    return TaskData(everything.subset(range(third, n)), everything.subset(range(third)),
                    everything.subset(range(third)), list(TAGS))


def test_the_teacher_logit_cache_keeps_each_sentences_own_token_logits(tmp_path):
    model = tiny_token_classifier("bert", len(ner_tokenizer()))
    data = _tagged_task(30, seed=2)
    context = _context(model, ner_tokenizer(), data)
    train = encode(context.tokenizer, data.train, 32)
    signals = distill.TeacherSignals(context.teacher, context, train)  # filled in batches of 64
    for inputs, _ in train.batches(7):  # read back in batches of other widths
        with torch.inference_mode():
            direct = context.teacher(**inputs).logits
        cached = signals.logits(inputs)
        real = inputs["attention_mask"].bool()
        assert cached.shape == direct.shape
        assert torch.allclose(cached[real], direct[real], atol=1e-5)


def test_int8_sensitivity_of_a_token_classifier_is_over_real_tokens():
    tokenizer = ner_tokenizer()
    model = tiny_token_classifier("bert", len(tokenizer))
    data = _tagged_task(12, seed=3)
    batches = [inputs for inputs, _ in encode(tokenizer, data.train, 32).batches(3)]
    adapter = adapter_for(model, build_host().architectures)
    scores = layer_sensitivity(model, [adapter.layer_list_path() + f".{i}" for i in range(2)], batches, batches)
    assert len(scores) == 2 and all(s > -1e-6 for s in scores)  # KL, up to float rounding
    reference = [torch.zeros(1, 3, 5)]
    quantized = [torch.tensor([[[0.0] * 5, [1.0, 0, 0, 0, 0], [9.0, 0, 0, 0, 0]]])]
    batch = [{"attention_mask": torch.tensor([[1, 1, 0]])}]
    assert _divergences(quantized, reference, batch).shape == (2,)  # the padded token is left out


def test_gradient_head_scores_use_the_per_token_loss():
    tokenizer = ner_tokenizer()
    model = tiny_token_classifier("bert", len(tokenizer))
    encoded = encode(tokenizer, _tagged_task(12, seed=4).train, 32)
    adapter = adapter_for(model, build_host().architectures)
    batched = gradient_head_scores(model, adapter, encoded, 4)
    one_by_one = gradient_head_scores(model, adapter, encoded, 1)
    assert batched.shape == (2, 4) and bool((batched > 0).all())
    assert torch.allclose(batched, one_by_one, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_every_structure_technique_and_recovery_work_on_a_token_classifier(family):
    """Every built-in technique on BERT and DistilBERT token classifiers (whose heads read every
    token's state): a tag per token comes out, finite."""
    tokenizer = ner_tokenizer()
    host = build_host()
    data = _tagged_task(36, seed=6)
    plan = [("layer_drop", {"keep_layers": 1}), ("ffn_pruning", {"keep_fraction": 0.5}),
            ("head_pruning", {"fraction": 0.5}), ("width_pruning", {"width_fraction": 0.75}),
            ("low_rank", {"rank_ratio": 0.5}), ("vocab_trim", {}), ("layer_sharing", {"group_size": 2}),
            ("lora", {"rank": 4, "epochs": 1.0, "batch_size": 8}),
            ("distillation", {"epochs": 1.0, "batch_size": 8, "hidden_weight": 0.5, "attention_weight": 0.5}),
            ("quantization", {"dtype": "int8"}), ("quantization", {"dtype": "int8-static", "fallback_layers": 1})]
    with thread_count(1):
        for name, values in plan:
            model = tiny_token_classifier(family, len(tokenizer))
            technique = host.techniques[name]
            context = _context(model, tokenizer, data)
            out = apply_steps(model, [PlanStep(technique, technique.make_config(values))], context)
            # The context's tokenizer: vocabulary trimming replaces it, and tagged words must still encode.
            inputs, _ = next(encode(context.tokenizer, data.validation, 32).batches(4))
            with torch.inference_mode():
                logits = out(**inputs).logits
            assert logits.shape == (*inputs["input_ids"].shape, len(TAGS)), name
            assert torch.isfinite(logits).all(), name


# -- the whole search -------------------------------------------------------------------------
def _independent_f1(model, tokenizer, split) -> float:
    """Entity F1 computed sentence by sentence straight from the tokenizer's word ids (no Encoded,
    no batching, no padding)."""
    predicted, truth = [], []
    for words, tags in zip(split.words, split.labels, strict=True):
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.inference_mode():
            guesses = model(**encoded).logits[0].argmax(-1).tolist()
        firsts, seen = [], set()
        for position, word in enumerate(encoded.word_ids(0)):
            if word is not None and word not in seen:
                seen.add(word)
                firsts.append(guesses[position])
        predicted.append([TAGS[i] for i in firsts])
        truth.append([TAGS[i] for i in tags[:len(firsts)]])
    return entity_f1(predicted, truth)


def _small_data_space(path):
    """A search space for recovery on about 128 training sentences: more passes at a higher rate."""
    path.write_text("distillation:\n  epochs: {type: float, low: 1.0, high: 4.0, step: 1.0}\n"
                    "  learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}\n"
                    "  batch_size: {type: categorical, choices: [16]}\n")
    return path


@pytest.mark.slow
def test_a_roberta_layout_tagger_searches_with_every_technique_and_reloads_in_a_fresh_process(tmp_path):
    """A user's own RoBERTa-layout token classifier with a WordPiece vocabulary: support is decided from
    the model and its tokenizer, so vocabulary trimming runs too; the best model reloads as a RoBERTa tagger."""
    with thread_count(1):
        write_tiny_token_classifier(tmp_path / "model", family="roberta")
    # Texts without two of the vocabulary's words: vocabulary trimming has rows to cut.
    sentences = [s for s in synthetic_ner(200, seed=5) if not {"rome", "yesterday"} & {w.lower() for w, _ in s}]
    write_conll(tmp_path / "data.conll", sentences)
    plans = tmp_path / "plans.yaml"
    plans.write_text("- layer_drop: {keep_layers: 1}\n  vocab_trim: {min_count: 1}\n"
                     "  ffn_pruning: {keep_fraction: 0.5}\n  head_pruning: {fraction: 0.5}\n"
                     "  distillation: {epochs: 4.0, learning_rate: 2.0e-3, batch_size: 16}\n"
                     "  quantization: {dtype: int8}\n")
    space = _small_data_space(tmp_path / "space.yaml")
    out = tmp_path / "run"
    with thread_count(1):
        code = main(["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data.conll"), "--out",
                     str(out), "--trials", "1", "--repeats", "3", "--warmup", "1", "--no-progress",
                     "--techniques", "layer_drop,vocab_trim,ffn_pruning,head_pruning,distillation,quantization",
                     "--max-accuracy-drop", "0.3", "--starting-points", str(plans), "--search-space", str(space)])
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["quality_metric"] == "entity_f1" and run["baseline"]["test_accuracy"] > 0.9
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"] and trials["test_accuracy"].iloc[0] > 0.6, trials.to_string()
    assert trials["parameters"].iloc[0] < 0.6 * run["baseline"]["parameters"]  # a layer, FFN, heads, vocabulary cut
    script = ("import sys, json, torch, autocompress\n"
              "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
              "print(type(model).__name__, model.config.num_hidden_layers, len(tok))\n"
              "batch = tok([['Anna', 'Johnson', 'met', 'Omar'], ['New', 'York']], is_split_into_words=True,"
              " return_tensors='pt', padding=True)\n"
              "with torch.no_grad():\n"
              "    print(json.dumps(model(**batch).logits.argmax(-1).tolist()))\n")
    fresh = fresh_process_outputs(script, out / "best")
    assert fresh[0] == fresh[1] and fresh[0].startswith("RobertaForTokenClassification 1 "), fresh[0]
    assert int(fresh[0].splitlines()[0].split()[-1]) < len(ner_tokenizer())  # the trimmed vocabulary reloads


@pytest.mark.slow
def test_a_token_classification_search_runs_every_technique_and_its_best_model_reloads_and_exports(ner, tmp_path):
    plans = tmp_path / "plans.yaml"
    plans.write_text("- quantization: {dtype: int8}\n"
                     "- layer_drop: {keep_layers: 1}\n  ffn_pruning: {keep_fraction: 0.5}\n"
                     "  head_pruning: {fraction: 0.5}\n"
                     "  distillation: {epochs: 4.0, learning_rate: 2.0e-3, batch_size: 16}\n"
                     "  quantization: {dtype: int8}\n")
    space = _small_data_space(tmp_path / "space.yaml")
    out = tmp_path / "run"
    with thread_count(1):
        code = main(["search", "--model", str(ner / "model"), "--data", str(ner / "data.conll"), "--out", str(out),
                     "--trials", "2", "--techniques", "layer_drop,ffn_pruning,head_pruning,distillation,quantization",
                     "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.3",
                     "--starting-points", str(plans), "--search-space", str(space)])
    assert code in (0, 5)
    run = json.loads((out / "run.json").read_text())
    assert run["quality_metric"] == "entity_f1"
    assert run["task_info"]["pipeline_tag"] == "token-classification"
    task = load_task(LocalTask(TaskOptions(model=ner / "model", data=ner / "data.conll")))
    baseline = run["baseline"]
    assert baseline["val_accuracy"] == pytest.approx(_independent_f1(task.teacher, task.tokenizer,
                                                                      task.data.validation), abs=1e-9)
    assert 0.8 < baseline["test_accuracy"] < 1.0  # far above chance (the noisy tags keep it below 1)
    assert baseline["val_accuracy"] < 1.0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2
    assert (trials["state"] == "COMPLETE").all(), trials[["plan", "reason"]].to_string()
    assert (trials["test_accuracy"] > 0.5).all(), trials[["plan", "test_accuracy"]].to_string()
    if json.loads((out / "pareto.json").read_text())["recommended"] is None:
        pytest.fail(f"no trial met a drop of 0.3 in entity F1: {trials[['plan', 'val_accuracy']].to_string()}")
    script = ("import sys, json, torch, autocompress\n"
              "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
              "print(type(model).__name__)\n"
              "batch = tok([['Anna', 'Johnson', 'met', 'Omar'], ['New', 'York']], is_split_into_words=True,"
              " return_tensors='pt', padding=True)\n"
              "with torch.no_grad():\n"
              "    print(json.dumps([[round(v, 5) for v in row] for row in model(**batch).logits.flatten(0, 1)"
              ".tolist()]))\n")
    fresh = fresh_process_outputs(script, out / "best")
    assert fresh[0] == fresh[1] and fresh[0].startswith("BertForTokenClassification")
    # The export runs in transformers' token-classification pipeline and names the entities.
    assert main(["export", str(out), "--to", str(tmp_path / "export")]) == 0
    pipeline_script = ("import sys, json\nfrom transformers import pipeline\n"
                       "tag = pipeline('token-classification', model=sys.argv[1], trust_remote_code=True,"
                       " aggregation_strategy='simple')\n"
                       "print(json.dumps([(e['entity_group'], e['word']) for e in tag('Anna Smith visited Paris')]))\n")
    result = subprocess.run([sys.executable, "-c", pipeline_script, str(tmp_path / "export")], capture_output=True,
                            text=True, check=True)
    entities = json.loads(result.stdout.strip().splitlines()[-1])
    assert ["LOC", "paris"] in entities, entities
    card = (tmp_path / "export" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card


@pytest.mark.slow
def test_a_token_classifier_searches_on_onnx_runtime_and_exports_to_onnx_with_the_same_tags(ner, tmp_path,
                                                                                              capsys):
    plans = tmp_path / "plans.yaml"
    plans.write_text("- ffn_pruning: {keep_fraction: 0.5}\n  quantization: {dtype: int8-static}\n")
    out = tmp_path / "run"
    with thread_count(1):
        assert main(["search", "--model", str(ner / "model"), "--data", str(ner / "data.conll"), "--out", str(out),
                     "--trials", "1", "--techniques", "ffn_pruning,quantization", "--target", "onnxruntime",
                     "--repeats", "3", "--warmup", "1", "--no-progress", "--max-accuracy-drop", "0.5",
                     "--starting-points", str(plans)]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["state"] == "COMPLETE").all() and (trials["test_accuracy"] > 0.5).all(), trials.to_string()
    capsys.readouterr()
    assert main(["export", str(out), "--to", str(tmp_path / "export"), "--onnx"]) == 0
    # The check compares tags of real tokens (padding left out), and says so.
    assert re.search(r"agree with PyTorch's on \d+ of \d+ tokens \(int8 kernels", capsys.readouterr().out)
    from autocompress.onnx_export import onnx_logits

    tokenizer = ner_tokenizer()
    batch = tokenizer([["Anna", "Johnson", "met", "Omar"], ["Rome"]], is_split_into_words=True,
                      return_tensors="pt", padding=True)
    import autocompress

    model, _ = autocompress.load_pretrained(tmp_path / "export")
    with torch.inference_mode():
        expected = model(**batch).logits.numpy()
    actual = onnx_logits(tmp_path / "export" / "model.onnx", dict(batch))
    assert actual.shape == expected.shape == (2, 7, len(TAGS))
    # int8 kernels round unlike PyTorch's: the logits are close, the tags the same where the top two are apart.
    real = batch["attention_mask"].bool().numpy()
    assert abs(actual - expected)[real].max() < 0.3
    top_two = numpy.sort(expected, axis=-1)[..., -2:]
    clear = real & (top_two[..., 1] - top_two[..., 0] > 0.6)
    assert clear.sum() >= 5 and (actual.argmax(-1) == expected.argmax(-1))[clear].all()


def test_encoded_labels_of_classes_are_unchanged():
    """Per-example labels still come out as they are (the per-token slicing leaves them alone)."""
    encoded = Encoded([[2, 5, 3], [2, 3]], torch.tensor([1, 0]), 0)
    (_, labels), = list(encoded.batches(4))
    assert labels.tolist() == [1, 0]
