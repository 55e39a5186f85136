"""Loading a user's data: formats, column names, and one clear error per problem."""

import json

import pandas as pd
import pytest

from autocompress.data import encode_labels, load_task_data, read_table, stratified_split
from autocompress.errors import DataError


def _rows(n=30):
    return [{"review": f"sentence number {i}", "stars": "pos" if i % 2 else "neg"} for i in range(n)]


def test_csv_jsonl_and_parquet_load_with_custom_columns(tmp_path):
    frame = pd.DataFrame(_rows())
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()))
    frame.to_parquet(tmp_path / "d.parquet")
    loaded = [read_table(tmp_path / name, "review", "stars") for name in ("d.csv", "d.jsonl", "d.parquet")]
    assert loaded[0] == loaded[1] == loaded[2]
    texts, labels = loaded[0]
    assert texts[3] == "sentence number 3" and labels[3] == "pos"


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ("text,label\n", "no rows"),
        ("review,stars\nhello,1\n", r"column 'text' not found \(columns: review, stars\); set --text-column"),
        ("text,label\na,pos\nb,pos\nc,pos\n", r"only one class \('pos'\)"),
        ("text,label\na,0.5\nb,1\nc,0\n", "label .0.5. is not a class"),
    ],
)
def test_bad_csv_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        load_task_data(path)
    assert str(path) in str(error.value)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '.xlsx' \(supported: .csv"):
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
    texts, labels = read_table(path, drop_missing=True)
    assert texts == ["good", "fine"]


def test_labels_map_to_sorted_indices():
    assert encode_labels([3, 1, 3, 2], "x") == ([2, 0, 2, 1], ["1", "2", "3"])
    assert encode_labels(["pos", "neg", "pos"], "x") == ([1, 0, 1], ["neg", "pos"])
    assert encode_labels([1.0, 0.0, "1"], "x") == ([1, 0, 1], ["0", "1"])


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


def test_a_class_too_small_to_split_is_an_error():
    with pytest.raises(DataError, match="class 'b' has 2 example"):
        stratified_split(["a", "b", "c", "d", "e"], [0, 0, 0, 1, 1], ["a", "b"])
