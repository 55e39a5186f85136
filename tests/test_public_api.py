"""The public surface: what ``import autocompress`` exports is versioned, documented and importable."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import autocompress
from autocompress.config import OPTIONS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_every_public_name_exists_has_a_docstring_and_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    for name in autocompress.__all__:
        value = getattr(autocompress, name)
        assert f"`{name}`" in text or f"### `{name}`" in text, f"docs/api.md does not document {name}"
        if callable(value) and not isinstance(value, type(autocompress.hookimpl)):
            assert value.__doc__, f"{name} has no docstring"
    assert set(dir(autocompress)) >= set(autocompress.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        autocompress.nope  # noqa: B018


def test_the_documented_version_is_the_package_constant():
    assert re.fullmatch(r"\d+\.\d+", autocompress.PUBLIC_API_VERSION)
    assert f"Public API version: **{autocompress.PUBLIC_API_VERSION}**" in DOCS.read_text(encoding="utf-8")


def test_result_fields_are_documented():
    import dataclasses

    text = DOCS.read_text(encoding="utf-8")
    for cls in (autocompress.SearchResult, autocompress.Candidate, autocompress.TeacherBaseline,
                autocompress.TrialResult):
        public = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
        public += [n for n, v in vars(cls).items() if isinstance(v, property) or
                   (callable(v) and not n.startswith("_") and n not in ("from_row",))]
        for name in public:
            assert f"`{name}`" in text or f"`{name}(" in text, f"docs/api.md does not document {cls.__name__}.{name}"


def test_compress_help_lists_every_search_option():
    for name in OPTIONS:
        if name not in ("no_progress", "disable"):
            assert f"    {name} (" in autocompress.compress.__doc__, name


def test_internals_are_not_exported_and_import_stays_light():
    assert not {"model_io", "search", "config", "run_search", "Host"} & set(autocompress.__all__)
    code = "import sys, autocompress; autocompress.compress; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
