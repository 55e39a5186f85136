"""What the code imports is what pyproject.toml declares, and a missing package is named, not a traceback.

CI (``.ci/run``) installs the README's set-up command into a fresh virtual environment and runs
scripts/check_dependencies.py there before these tests; this module runs the same check from the
suite, plus cases the check must reject.
"""

import importlib.util
import sys
import textwrap
from pathlib import Path

from blocked_imports import import_without

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_dependencies", ROOT / "scripts" / "check_dependencies.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_third_party_import_of_the_repository_is_declared():
    assert _checker().check() == []


def test_the_check_names_a_dependency_removed_from_pyproject(tmp_path):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"matplotlib>=' in pyproject
    without = "\n".join(line for line in pyproject.splitlines() if '"matplotlib>=' not in line)
    problems = _checker().check(ROOT, pyproject=without)
    assert len(problems) == 1 and problems[0].startswith("matplotlib"), problems
    assert "autocompress/report/plots.py" in problems[0] and "not declared in pyproject.toml" in problems[0]


def test_the_check_rejects_undeclared_transitive_and_unguarded_optional_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "pkg"
        dependencies = ["pyyaml>=6", "optuna>=4"]
        [project.optional-dependencies]
        onnx = ["onnx>=1.18"]
        dev = ["pytest>=8"]
        [tool.setuptools]
        package-dir = {"pkg" = "pkg"}
    """))
    (tmp_path / "pkg" / "__init__.py").write_text(textwrap.dedent("""
        import json
        import yaml
        import pkg.other
        import onnx  # an extra, imported at module level: every user pays for it or crashes
        import sqlalchemy  # comes with optuna, but the code relies on it directly
        import surely_not_a_module_anywhere


        def export():
            import onnx  # an extra, imported where it is needed: fine
            try:
                import onnxruntime  # guarded by a try that handles its absence: fine
            except ImportError:
                onnxruntime = None
    """))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_pkg.py").write_text("import pytest\nimport hypothesis\nimport helper\n")
    (tmp_path / "tests" / "helper.py").write_text("")
    problems = _checker().check(tmp_path)
    assert len(problems) == 5, problems
    hypothesis, onnx, onnxruntime, sqlalchemy, surely = sorted(problems)
    assert onnx.startswith("onnx is only in the optional extra(s) onnx") and "pkg/__init__.py:5" in onnx
    assert sqlalchemy.startswith("sqlalchemy") and "only comes as a dependency of a declared package" in sqlalchemy
    assert surely.startswith("surely_not_a_module_anywhere") and "no installed distribution" in surely
    assert onnxruntime.startswith("onnxruntime") and "not declared" in onnxruntime  # guarded, but in no extra
    assert hypothesis.startswith("hypothesis") and "tests/test_pkg.py:2" in hypothesis and "'dev' extra" in hypothesis


def test_a_test_side_import_of_an_extra_outside_dev_must_be_guarded(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "pkg"
        dependencies = []
        [project.optional-dependencies]
        llamacpp = ["llama-cpp-python>=0.3"]
        dev = ["pytest>=8"]
        [tool.setuptools]
        package-dir = {"pkg" = "pkg"}
    """))
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "row.py").write_text(textwrap.dedent("""
        try:
            import llama_cpp  # an optional runtime CI does not build: the row says what to install
        except ImportError:
            llama_cpp = None
    """))
    assert _checker().check(tmp_path) == []
    (tmp_path / "benchmarks" / "other.py").write_text("from llama_cpp import Llama\n")
    problems = _checker().check(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("llama_cpp (distribution llama-cpp-python)"), problems
    assert "benchmarks/other.py:1" in problems[0] and "'dev' extra" in problems[0]


def test_the_contract_kit_without_pytest_says_what_to_install():
    result = import_without(["pytest"], "autocompress.testing")
    assert result.returncode != 0
    assert ("autocompress.testing (the technique contract kit): the Python package 'pytest' is not installed "
            "(No module named 'pytest'); run pip install \"autocompress[testing]\"") in result.stderr, result.stderr
