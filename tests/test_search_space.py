"""Search-space YAML: the short form, and errors naming the file, technique and valid names."""

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from autocompress.errors import SearchSpaceError
from autocompress.plugin_manager import build_host
from autocompress.search_space import load_overrides, parse_distribution


@pytest.fixture(scope="module")
def techniques():
    host = build_host(autoload=False)
    return {entry.name: entry.cls for entry in host.techniques}


def test_short_forms_become_optuna_distributions():
    assert parse_distribution({"type": "float", "low": 0.1, "high": 0.9, "step": 0.1}, "x") == \
        FloatDistribution(0.1, 0.9, step=0.1)
    assert parse_distribution({"type": "int", "low": 2, "high": 64, "log": True}, "x") == \
        IntDistribution(2, 64, log=True)
    assert parse_distribution({"type": "categorical", "choices": ["int8", "bf16"]}, "x") == \
        CategoricalDistribution(["int8", "bf16"])


def test_builtin_spaces_load(techniques):
    assert "keep_fraction" in techniques["ffn_pruning"].search_space()
    assert techniques["quantization"].search_space()["dtype"].choices == ("int8", "bf16", "int8-static", "int4")


def test_override_file_replaces_fields(tmp_path, techniques):
    path = tmp_path / "space.yaml"
    path.write_text("ffn_pruning:\n  keep_fraction: {type: float, low: 0.5, high: 0.6}\n")
    spaces = load_overrides(path, techniques)
    assert spaces["ffn_pruning"]["keep_fraction"] == FloatDistribution(0.5, 0.6)


@pytest.mark.parametrize(
    "document, expected",
    [
        ("pruning:\n  keep_fraction: {type: float, low: 0.1, high: 0.2}\n",
         r"unknown technique 'pruning' \(valid: .*ffn_pruning, .*quantization"),
        ("ffn_pruning:\n  keep: {type: float, low: 0.1, high: 0.2}\n",
         r"unknown field 'keep' for technique 'ffn_pruning' \(fields: keep_fraction, multiple_of\)"),
        ("ffn_pruning:\n  keep_fraction: {type: float, low: 0.9, high: 0.2}\n", r"low \(0.9\) is greater than high"),
        ("quantization:\n  dtype: {type: categorical, choices: []}\n", "non-empty list"),
        ("ffn_pruning:\n  keep_fraction: {type: float, low: one, high: 0.2}\n", "'low' must be a number"),
        ("ffn_pruning:\n  keep_fraction: {type: floaty, low: 0.1, high: 0.2}\n", "'type' must be one of"),
        ("ffn_pruning:\n  keep_fraction: {type: float, low: 0.1, high: 0.2, lo: 1}\n", "unknown key"),
        ("ffn_pruning:\n  keep_fraction: {type: float, low: 0.0, high: 0.2, log: true}\n", "low > 0"),
        ("ffn_pruning:\n  multiple_of: {type: int, low: 1.5, high: 8}\n", "must be an integer"),
        ("ffn_pruning: [1, 2]\n", "expects a mapping"),
        ("- just a list\n", "expected a mapping of technique names"),
        ("ffn_pruning: {keep_fraction: {type: float, low: 0.1\n", "not valid YAML"),
    ],
)
def test_invalid_documents_name_the_file_and_the_problem(tmp_path, techniques, document, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    with pytest.raises(SearchSpaceError, match=expected) as error:
        load_overrides(path, techniques)
    assert str(path) in str(error.value)


def test_missing_file_is_named(tmp_path, techniques):
    with pytest.raises(SearchSpaceError, match="file not found"):
        load_overrides(tmp_path / "nope.yaml", techniques)
