"""Hugging Face ``datasets`` as --data: saved directories with their own splits, and bad ones named."""

import re

import datasets
import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.data import load_task_data
from autocompress.errors import DataError
from autocompress.hf_data import save_for_search, task_data_from_datasets
from autocompress.testing import synthetic_sentiment, write_tiny_checkpoint


def _split(texts, labels, text="text", label="label", features=None):
    return datasets.Dataset.from_dict({text: list(texts), label: list(labels)}, features=features)


def _dict(n=90, seed=0, **splits):
    texts, labels = synthetic_sentiment(n, seed=seed)
    parts = splits or {"train": (0, 60), "validation": (60, 75), "test": (75, 90)}
    return datasets.DatasetDict({name: _split(texts[a:b], labels[a:b]) for name, (a, b) in parts.items()})


def test_a_saved_dataset_dict_with_its_own_splits_is_used_as_such(tmp_path):
    saved = _dict()
    saved.save_to_disk(str(tmp_path / "ds"))
    data = load_task_data(tmp_path / "ds", seed=3)
    for ours, theirs in ((data.train, saved["train"]), (data.validation, saved["validation"]),
                         (data.test, saved["test"])):
        assert ours.texts == theirs["text"]
        assert [data.label_names[i] for i in ours.labels] == theirs["label"]
    assert data.label_names == ["neg", "pos"]


def test_class_label_ids_and_names_are_kept_and_other_split_names_recognised(tmp_path):
    texts, _ = synthetic_sentiment(40)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["positive", "negative"])})
    ids = [i % 2 for i in range(40)]
    saved = datasets.DatasetDict({"train": _split(texts[:30], ids[:30], features=features),
                                  "dev": _split(texts[30:35], ids[30:35], features=features),
                                  "test": _split(texts[35:], ids[35:], features=features)})
    data = task_data_from_datasets(saved, "glue-like")
    assert data.label_names == ["positive", "negative"]  # the dataset's order, not sorted
    assert data.train.labels == ids[:30] and data.validation.texts == texts[30:35]


def test_a_missing_validation_split_is_carved_from_train_never_from_test(tmp_path):
    saved = _dict(100, train=(0, 80), test=(80, 100))
    saved.save_to_disk(str(tmp_path / "ds"))
    data = load_task_data(tmp_path / "ds", seed=1)
    assert data.test.texts == saved["test"]["text"]
    assert len(data.validation) == 2 * round(40 / 9) and len(data.train) + len(data.validation) == 80  # 1/9 a class
    assert set(data.train.texts + data.validation.texts) == set(saved["train"]["text"])
    assert set(data.validation.labels) == {0, 1}  # stratified
    assert data == load_task_data(tmp_path / "ds", seed=1)  # seeded


def test_a_lone_dataset_is_split_like_a_data_file(tmp_path):
    texts, labels = synthetic_sentiment(100)
    _split(texts, labels).save_to_disk(str(tmp_path / "ds"))
    data = load_task_data(tmp_path / "ds")
    assert (len(data.train), len(data.validation), len(data.test)) == (80, 10, 10)


@pytest.mark.parametrize("make, message", [
    (lambda: _dict(train=(0, 60), validation=(60, 75)).rename_column("text", "sentence"),
     "split 'train': column 'text' not found (columns: sentence, label); set --text-column"),
    (lambda: datasets.DatasetDict({**_dict(), "test": _split([], [])}), "split 'test': the split is empty"),
    (lambda: datasets.DatasetDict({**_dict(), "validation": _split(["a fine film", "odd"], ["pos", "meh"])}),
     "split 'validation' has label 'meh', which split 'train' never has (train's labels: neg, pos)"),
    (lambda: datasets.DatasetDict({"training": _dict()["train"]}),
     "no 'train' split (splits: training); name the training split 'train'"),
    (lambda: datasets.DatasetDict({**_dict(), "test": _split(["a", "b"], [0, -1], features=datasets.Features({
        "text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}))}),
     "the label column 'label' differs between splits: split 'train' has no ClassLabel, split 'test' has "
     "ClassLabel ['neg', 'pos']"),
])
def test_bad_datasets_are_refused_naming_the_split_and_column(tmp_path, make, message):
    make().save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match=re.escape(message)):
        load_task_data(tmp_path / "ds")


def test_unlabelled_examples_in_a_class_label_split_are_named():
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    texts, _ = synthetic_sentiment(40)
    saved = datasets.DatasetDict({"train": _split(texts[:30], [i % 2 for i in range(30)], features=features),
                                  "test": _split(texts[30:], [-1] * 10, features=features)})
    with pytest.raises(DataError, match="split 'test' has label id\\(s\\) -1 outside its ClassLabel names"):
        task_data_from_datasets(saved, "glue")


def test_a_folder_that_is_not_a_saved_dataset_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="not one written by datasets' save_to_disk"):
        load_task_data(tmp_path / "folder")


def test_objects_are_saved_by_content(tmp_path):
    first, again = save_for_search(_dict(), tmp_path), save_for_search(_dict(), tmp_path)
    assert first == again and first.parent == tmp_path / "data"
    assert save_for_search(_dict(seed=1), tmp_path) != first
    frame = pd.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    assert save_for_search(frame, tmp_path) == save_for_search(frame.copy(), tmp_path)


def test_the_command_line_searches_a_saved_dataset_dict_and_bad_ones_exit_2(tmp_path, capsys):
    write_tiny_checkpoint(tmp_path / "model")
    _dict(120, train=(0, 90), validation=(90, 105), test=(105, 120)).save_to_disk(str(tmp_path / "ds"))
    assert main(["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "ds"), "--trials", "1",
                 "--techniques", "quantization", "--out", str(tmp_path / "run"), "--repeats", "3", "--warmup", "1",
                 "--no-progress", "--max-accuracy-drop", "0.5"]) == 0
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert trials.loc[0, "ended"] == "complete"
    _dict().rename_column("label", "stars").save_to_disk(str(tmp_path / "bad"))
    assert main(["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "bad"),
                 "--out", str(tmp_path / "run2")]) == 2
    assert "split 'train': column 'label' not found (columns: text, stars)" in capsys.readouterr().err
