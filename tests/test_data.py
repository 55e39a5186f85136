"""Loading a user's data: formats, column names, and one clear error per problem."""

import json

import pandas as pd
import pytest

from autocompress.data import (
    TaskData,
    TextDataset,
    encode_labels,
    load_task_data,
    read_table,
    stratified_split,
)
from autocompress.errors import DataError


def _rows(n=30):
    return [{"review": f"sentence number {i}", "stars": "pos" if i % 2 else "neg"} for i in range(n)]


def test_csv_tsv_jsonl_and_parquet_load_with_custom_columns(tmp_path):
    frame = pd.DataFrame(_rows())
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()))
    frame.to_parquet(tmp_path / "d.parquet")
    names = ("d.csv", "d.tsv", "d.jsonl", "d.parquet")
    loaded = [read_table(tmp_path / name, "review", "stars") for name in names]
    assert all(result == loaded[0] for result in loaded)
    texts, labels, pairs = loaded[0]
    assert texts[3] == "sentence number 3" and labels[3] == "pos" and pairs is None


def test_load_task_data_encodes_and_splits(tmp_path):
    pd.DataFrame(_rows(40)).to_parquet(tmp_path / "d.parquet")
    data = load_task_data(tmp_path / "d.parquet", "review", "stars", seed=3)
    assert data.label_names == ["neg", "pos"] and data.num_labels == 2
    assert [len(data.train), len(data.validation), len(data.test)] == [32, 4, 4]
    assert data == load_task_data(tmp_path / "d.parquet", "review", "stars", seed=3)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ("text,label\n", "no rows"),
        ("review,stars\nhello,1\n", r"column 'text' not found \(columns: review, stars\); set --text-column"),
        ("text,stars\nhello,1\n", r"column 'label' not found \(columns: text, stars\); set --label-column"),
        ("text,label\na,pos\nb,pos\nc,pos\n", r"only one class \('pos'\)"),
        ("text,label\na,0.5\nb,1\nc,0\n", "label .0.5. is not a class"),
        ("text,label\na,1,extra\nb,0\n", "a row has more fields than the header"),
        ("text,label\na,1\nb,0,extra\n", "cannot parse as CSV: .*line 3"),
    ],
)
def test_bad_csv_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        load_task_data(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.parquet", b"", "the file is empty"),
        ("d.parquet", b"text,label\na,1\n", "not a readable Parquet file"),
        ("d.jsonl", b"text,label\na,1\n", r"line 1 is not valid JSON"),
        ("d.jsonl", b'{"text": "a", "label": 1}\n[1, 2]\n', r"line 2 is a JSON list, not an object"),
    ],
)
def test_a_file_in_the_wrong_format_is_an_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        read_table(path)
    assert str(path) in str(error.value)


def test_missing_file_directory_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="nope.csv: data file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="folder.csv: not a file"):
        read_table(tmp_path / "folder.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '.xlsx' \(supported: .csv, .jsonl, .ndjson"):
        read_table(tmp_path / "data.xlsx")


def test_non_utf8_text_names_the_byte_and_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\ngood,1\ncaf\xe9,0\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(invalid byte 0xe9 at byte 21, line 3\)"):
        read_table(path)


def test_missing_values_are_counted_and_dropped_only_when_allowed(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\ngood,1\n,0\nbad,\nfine,1\n")
    with pytest.raises(DataError, match=r"2 rows have an empty text or label \(rows 3, 4\).*--drop-missing"):
        read_table(path)
    texts, labels, _ = read_table(path, drop_missing=True)
    assert texts == ["good", "fine"] and labels == ["1", "1"]


def test_missing_values_in_json_lines_are_reported_by_line(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = ['{"text": "good", "label": 1}', "", '{"text": "x", "label": null}',
             '{"text": "y", "label": " "}', '{"label": 0}', '{"text": "fine", "label": 0}']
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"3 rows have an empty text or label \(rows 3, 4, 5\)"):
        read_table(path)
    assert read_table(path, drop_missing=True) == (["good", "fine"], [1, 0], None)


def test_many_missing_rows_are_counted_and_the_list_shortened(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "a,\n" * 12 + "b,1\n")
    with pytest.raises(DataError, match=r"12 rows have .*\(rows 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, \.\.\.\)"):
        read_table(path)


def test_labels_map_to_sorted_indices():
    assert encode_labels([3, 1, 3, 2], "x") == ([2, 0, 2, 1], ["1", "2", "3"])
    assert encode_labels(["10", "9", "10"], "x") == ([1, 0, 1], ["9", "10"])  # numerically, not "10" < "9"
    assert encode_labels(["pos", "neg", "pos"], "x") == ([1, 0, 1], ["neg", "pos"])
    assert encode_labels([1.0, 0.0, "1"], "x") == ([1, 0, 1], ["0", "1"])
    assert encode_labels([True, False, True], "x") == ([1, 0, 1], ["False", "True"])


def test_fractional_labels_and_a_single_class_are_errors():
    with pytest.raises(DataError, match=r"reviews.csv: label 2.5 is not a class"):
        encode_labels([1.0, 2.5], "reviews.csv")
    with pytest.raises(DataError, match=r"reviews.csv: only one class \('pos'\): .* needs at least 2"):
        encode_labels(["pos", "pos"], "reviews.csv")


def test_stratified_split_is_deterministic_balanced_and_disjoint():
    texts = [f"t{i}" for i in range(200)]
    labels = [0] * 150 + [1] * 50
    first = stratified_split(texts, labels, ["a", "b"], seed=7)
    again = stratified_split(texts, labels, ["a", "b"], seed=7)
    other = stratified_split(texts, labels, ["a", "b"], seed=8)
    assert first == again and first.fingerprint() == again.fingerprint()
    assert first.fingerprint() != other.fingerprint()
    splits = (first.train, first.validation, first.test)
    assert [len(s) for s in splits] == [160, 20, 20]
    assert all(sum(s.labels) / len(s) == pytest.approx(0.25) for s in splits)
    seen = [set(s.texts) for s in splits]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert seen[0] | seen[1] | seen[2] == set(texts)


def test_every_split_gets_every_class_and_a_class_too_small_is_an_error():
    data = stratified_split([f"t{i}" for i in range(23)], [0] * 20 + [1] * 3, ["a", "b"])
    assert all(set(s.labels) == {0, 1} for s in (data.train, data.validation, data.test))
    with pytest.raises(DataError, match="class 'b' has 2 example"):
        stratified_split(["a", "b", "c", "d", "e"], [0, 0, 0, 1, 1], ["a", "b"])
    with pytest.raises(ValueError, match="indices 0..1"):
        stratified_split(["a", "b", "c"], [0, 1, 2], ["a", "b"])


def test_fingerprint_is_stable_across_runs():
    data = TaskData(TextDataset(["a good film", "dull"], [1, 0]), TextDataset(["fine"], [1]),
                    TextDataset(["bad"], [0]), ["neg", "pos"])
    # A fixed value: a change here silently invalidates every cached teacher and study.
    assert data.fingerprint() == "950dec8a643ec639a82362e83d433e86e04ee3f0abb61d283b11cfe2dbc79856"
    relabelled = TaskData(data.train, data.validation, data.test, ["negative", "positive"])
    assert relabelled.fingerprint() != data.fingerprint()
