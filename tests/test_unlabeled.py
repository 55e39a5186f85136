"""Distillation beyond the labelled examples: unlabeled texts (``--unlabeled``) and augmented copies
(``autocompress.augment``) join recovery with the teacher as their only label."""

import json
import random

import pandas as pd
import pytest
import torch
from torch import nn

from autocompress import distill
from autocompress.arch import adapter_for
from autocompress.augment import augmented_copies, nearest_words, replace_words, single_token_words
from autocompress.cli import main
from autocompress.data import UNLABELED, TextDataset, read_unlabeled, stratified_split
from autocompress.errors import DataError, InputError
from autocompress.measure import thread_count
from autocompress.plugin_manager import build_host
from autocompress.plugins.distillation import Distillation
from autocompress.technique import ApplyContext
from autocompress.testing import synthetic_sentiment, tiny_tokenizer, trained_tiny_model, write_tiny_checkpoint
from autocompress.testing.tiny import NEUTRAL


@pytest.fixture(autouse=True)
def one_thread():
    with thread_count(1):
        yield


# -- reading the texts --------------------------------------------------------------------------
def test_a_text_file_gives_one_text_per_nonblank_line(tmp_path):
    path = tmp_path / "more.txt"
    path.write_text("a fine film\n\n   \nthe plot drags\n")
    texts = read_unlabeled(path)
    assert texts.texts == ["a fine film", "the plot drags"] and texts.labels == [UNLABELED] * 2 and texts.pairs is None


def test_a_table_gives_its_text_column_without_empty_rows_and_pairs_when_asked(tmp_path):
    path = tmp_path / "more.csv"
    pd.DataFrame({"premise": ["a", "", "c"], "hypothesis": ["x", "y", None], "stars": [1, 2, 3]}).to_csv(
        path, index=False)
    single = read_unlabeled(path, "premise")
    assert single.texts == ["a", "c"] and single.pairs is None  # the labels of a table are never read
    pairs = read_unlabeled(path, "premise", pair_column="hypothesis")
    assert pairs.texts == ["a"] and pairs.pairs == ["x"]


@pytest.mark.parametrize(("name", "content", "kwargs", "message"), [
    ("blank.txt", "\n  \n", {}, "no text in the unlabeled-text file"),
    ("more.csv", "sentence\nfine\n", {}, "column 'text' not found (columns: sentence); set --text-column"),
    ("notes.docx", "PK", {}, "unsupported file type '.docx' (supported: .txt, .csv"),
    ("more.txt", "fine\n", {"pair_column": "second"}, "a .txt file holds single texts"),
])
def test_bad_unlabeled_files_are_refused_naming_the_file(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="unlabeled|text|column|type") as error:
        read_unlabeled(path, **kwargs)
    assert name in str(error.value) and message in str(error.value)
    with pytest.raises(DataError, match="not found"):
        read_unlabeled(tmp_path / "absent.txt")


def test_unlabeled_texts_change_the_task_fingerprint():
    texts, labels = synthetic_sentiment(60, seed=1)
    data = stratified_split(texts, [1 if y == "pos" else 0 for y in labels], ["neg", "pos"])
    more = TextDataset(["extra words"], [UNLABELED])
    from dataclasses import replace

    assert replace(data, unlabeled=more).fingerprint() != data.fingerprint()
    assert replace(data, unlabeled=None).fingerprint() == data.fingerprint()


# -- the loss -----------------------------------------------------------------------------------
def test_a_labelled_example_keeps_the_old_loss_and_an_unlabeled_one_learns_from_the_teacher_alone():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    labels = torch.tensor([0, 2, 1, 0, 1, 2])
    old = (0.3 * distill.soft_label_loss(student, teacher, 2.0)
           + 0.7 * nn.functional.cross_entropy(student, labels))
    assert torch.allclose(distill.logit_distillation_loss(student, teacher, labels, 2.0, 0.7), old)
    unlabeled = torch.full((6,), UNLABELED)
    soft = distill.soft_label_loss(student, teacher, 2.0)
    assert torch.allclose(distill.logit_distillation_loss(student, teacher, unlabeled, 2.0, 0.7), soft)
    # Even alpha = 1 (labels only) leaves an unlabeled example the teacher's signal, never a label.
    mixed = torch.tensor([0, UNLABELED, 1, UNLABELED, 1, 2])
    per_example = distill.soft_label_losses(student, teacher, 2.0)
    hard = nn.functional.cross_entropy(student, mixed.clamp_min(0), reduction="none")
    expected = torch.where(mixed >= 0, hard, per_example).mean()
    assert torch.allclose(distill.logit_distillation_loss(student, teacher, mixed, 2.0, 1.0), expected)


# -- augmentation -------------------------------------------------------------------------------
def test_only_words_the_tokenizer_keeps_whole_are_candidates():
    tokenizer = tiny_tokenizer()
    words = single_token_words(tokenizer, ["Great film, zzzqqq!", "w3 dull"])
    assert set(words) == {"Great", "film", "dull"}  # zzzqqq has no token; w3 has digits
    assert words["Great"] == tokenizer.convert_tokens_to_ids("great")


def test_neighbours_come_from_the_embedding_space():
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    words = {"good": 0, "great": 1, "plot": 2, "awful": 3, "Good": 0}
    neighbours = nearest_words(words, embeddings, count=1)
    assert neighbours["good"] == ["great"] and neighbours["great"] in (["good"], ["Good"])
    assert "good" not in neighbours["Good"]  # one token, two spellings: not each other's neighbours
    assert replace_words("good plot", {"good": ["great"]}, random.Random(0), probability=1.0) == "great plot"
    assert replace_words("good plot", {"good": ["great"]}, random.Random(0), probability=0.0) == "good plot"


def test_augmented_copies_are_seeded_unlabeled_and_use_only_in_domain_words():
    tokenizer = tiny_tokenizer()
    texts, _ = synthetic_sentiment(40, seed=2)
    dataset = TextDataset(texts, [0] * 40)
    embeddings = trained_tiny_model().get_input_embeddings().weight.detach()
    copies = augmented_copies(dataset, 100, tokenizer, embeddings, seed=5)
    assert len(copies) == 100 and copies.labels == [UNLABELED] * 100
    assert copies == augmented_copies(dataset, 100, tokenizer, embeddings, seed=5)
    assert copies != augmented_copies(dataset, 100, tokenizer, embeddings, seed=6)
    changed = sum(copy != texts[i % 40] for i, copy in enumerate(copies.texts))
    assert changed > 50  # about 0.4 of the words of every copy are replaced
    vocabulary = {word.lower() for text in texts for word in text.split()}
    assert {word.lower() for text in copies.texts for word in text.split()} <= vocabulary


# -- recovery -----------------------------------------------------------------------------------
def _task(seed: int = 3):
    texts, labels = synthetic_sentiment(120, seed=seed)
    return stratified_split(texts, [1 if y == "pos" else 0 for y in labels], ["neg", "pos"])


def _context(student, teacher, data) -> ApplyContext:
    host = build_host(autoload=False)
    return ApplyContext(adapter=adapter_for(student, host.architectures), tokenizer=tiny_tokenizer(), data=data,
                        teacher=teacher, max_length=32, seed=0)


def test_the_training_set_holds_the_unlabeled_texts_and_copies_only_with_a_teacher():
    from dataclasses import replace

    teacher = trained_tiny_model()
    more = TextDataset([f"{random.Random(i).choice(NEUTRAL)} film" for i in range(30)], [UNLABELED] * 30)
    data = replace(_task(), unlabeled=more)
    context = _context(trained_tiny_model(), teacher, data)
    settings = distill.RecoverySettings(learning_rate=1e-4, epochs=1.0, batch_size=8, unlabeled=True, augment_to=200)
    full = distill.training_set(context, settings)
    assert len(full) == 200 and full.texts[: len(data.train)] == data.train.texts
    assert full.texts[len(data.train): len(data.train) + 30] == more.texts
    assert full.labels[len(data.train):] == [UNLABELED] * (200 - len(data.train))
    without = distill.training_set(context, settings.__class__(**{**settings.__dict__, "unlabeled": False}))
    assert more.texts[0] not in without.texts[len(data.train): len(data.train) + 1]
    plain = distill.training_set(context, settings.__class__(**{**settings.__dict__, "use_teacher": False}))
    assert plain == data.train  # no teacher to label them: fine-tuning sees the labelled split alone


def test_distillation_trains_on_the_teacher_outputs_for_the_unlabeled_texts():
    from dataclasses import replace

    teacher = trained_tiny_model()
    more = TextDataset(["a truly unusual w7 w8 w9 sentence"], [UNLABELED])
    data = replace(_task(), unlabeled=more)
    student = trained_tiny_model()
    context = _context(student, teacher, data)
    before = {name: p.clone() for name, p in student.named_parameters()}
    Distillation().apply(student, Distillation.make_config({"epochs": 1.0, "learning_rate": 1e-3}), context)
    assert any(not torch.equal(before[name], p) for name, p in student.named_parameters())
    cache = distill._logit_cache(teacher, data.fingerprint(), 32)
    ids = tuple(tiny_tokenizer()(more.texts[0], truncation=True, max_length=32)["input_ids"])
    assert ids in cache  # the teacher labelled the unlabeled text, and recovery trained on it
    assert torch.allclose(cache[ids], teacher(input_ids=torch.tensor([ids])).logits[0].float(), atol=1e-5)


def test_the_distillation_config_checks_its_new_fields():
    for bad in ({"augment_to": -1}, {"augment_to": 1.5}, {"unlabeled": "yes"}):
        with pytest.raises(InputError, match="technique 'distillation': (augment_to|unlabeled) must be"):
            Distillation.make_config(bad)


# -- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_search_with_unlabeled_texts_distils_on_them_and_records_them(tmp_path):
    model = write_tiny_checkpoint(tmp_path / "model", train_steps=40)
    texts, labels = synthetic_sentiment(90, seed=4)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "data.csv", index=False)
    more, _ = synthetic_sentiment(60, seed=5)
    (tmp_path / "more.txt").write_text("\n".join(more) + "\n")
    plans = tmp_path / "plans.yaml"
    plans.write_text("- layer_drop: {keep_layers: 1}\n  distillation: {epochs: 1.0}\n")
    space = tmp_path / "space.yaml"  # augmentation is not searched by default: a search space turns it on
    space.write_text("distillation:\n  augment_to: {type: categorical, choices: [200]}\n")
    out = tmp_path / "run"
    code = main(["search", "--model", str(model), "--data", str(tmp_path / "data.csv"), "--unlabeled",
                 str(tmp_path / "more.txt"), "--techniques", "layer_drop,distillation", "--starting-points",
                 str(plans), "--search-space", str(space), "--trials", "1", "--out", str(out), "--no-progress",
                 "--repeats", "2", "--warmup", "1", "--max-accuracy-drop", "0.5"])
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert "plus 60 unlabeled texts from" in run["task_description"]
    trials = pd.read_csv(out / "trials.csv")
    assert trials["state"].tolist() == ["COMPLETE"] and "augment_to=200" in trials["plan"][0]
    # The same files without --unlabeled are another task: the run directory refuses to mix them.
    again = main(["search", "--model", str(model), "--data", str(tmp_path / "data.csv"), "--techniques",
                  "layer_drop,distillation", "--trials", "1", "--out", str(out), "--no-progress"])
    assert again == 2
