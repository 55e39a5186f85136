"""Meta-tests: every hook in autocompress/hookspecs.py is documented, called by the host, and tested.

Adding a hook to hookspecs.py without a ``### <hook name>`` section in docs/plugins.md that names
its arguments, without host code that calls it (through pluggy, never an implementation by hand),
or without a ``test_hook_<hook name>`` test in a module that implements it, fails here.
"""

import ast
import re
import sys
from pathlib import Path

import pluggy
import pytest

from autocompress import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TEST_DIRS = (ROOT / "tests", ROOT / "examples" / "autocompress-example-plugin" / "tests")


def _hookspecs() -> dict[str, tuple[str, ...]]:
    pm = pluggy.PluginManager("autocompress")
    pm.add_hookspecs(hookspecs)
    return {name: tuple(caller.spec.argnames) for name, caller in vars(pm.hook).items()
            if isinstance(caller, pluggy.HookCaller) and caller.spec is not None}


HOOKS = _hookspecs()


def _doc_sections() -> dict[str, str]:
    """Level-3 sections of docs/plugins.md: heading text -> body up to the next heading."""
    text = DOCS.read_text(encoding="utf-8")
    parts = re.split(r"^(#{2,3}) (.+?)\s*$", text, flags=re.M)
    return {parts[i + 1]: parts[i + 2] for i in range(1, len(parts) - 2, 3) if parts[i] == "###"}


def _source(paths) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in paths)


def test_hookspecs_are_found():
    assert {"autocompress_register_techniques", "autocompress_trial_finished"} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_with_its_arguments(hook):
    sections = _doc_sections()
    assert hook in sections, f"docs/plugins.md has no '### {hook}' section"
    for argument in HOOKS[hook]:
        assert re.search(rf"\b{argument}\b", sections[hook]), f"docs/plugins.md '### {hook}' never names '{argument}'"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_called_by_the_host(hook):
    host_code = _source(p for p in (ROOT / "autocompress").rglob("*.py") if p.name != "hookspecs.py")
    assert f"hook.{hook}" in host_code, f"no code in autocompress/ calls pm.hook.{hook}"


def test_the_host_calls_implementations_only_through_pluggy():
    """An implementation called by hand (``impl.function(...)``) would bypass hook wrappers,
    tryfirst/trylast and pluggy's tracing."""
    host_code = _source(p for p in (ROOT / "autocompress").rglob("*.py") if p.name != "hookspecs.py")
    assert not re.search(r"\.function\s*\(", host_code), "host code calls a hook implementation's function directly"


def _hook_tests() -> dict[str, list[tuple[str, set[str]]]]:
    """Per test file: (name of each ``test_hook_*`` function, hooks its module implements), read
    from the syntax tree, so neither a comment nor a string can stand in for a test."""
    found = {}
    for path in (p for d in TEST_DIRS if d.is_dir() for p in d.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = list(ast.walk(tree))
        implemented = {node.name for node in nodes if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        implemented |= {node.arg for node in nodes if isinstance(node, ast.keyword) and node.arg}
        tests = [node.name for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_")]
        found[str(path.relative_to(ROOT))] = [(name, implemented & set(HOOKS)) for name in tests]
    return found


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_has_a_test_that_implements_it(hook):
    """Like datasette's meta-test: each hook has a ``test_hook_<hook>...`` test function, in a module
    that implements the hook (a hook function, or a plugin built with it as a keyword)."""
    candidates = [(module, name, implemented) for module, tests in _hook_tests().items()
                  for name, implemented in tests if hook in name]
    assert candidates, f"no test function named test_hook_{hook}... (write one that implements the hook)"
    assert any(hook in implemented for _, _, implemented in candidates), (
        f"{', '.join(f'{m}::{n}' for m, n, _ in candidates)} never implement {hook}")


def test_the_hook_test_check_rejects_a_mention_that_is_no_test(tmp_path, monkeypatch):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(
        "# autocompress_trial_finished is tested elsewhere\n"
        "def test_hook_autocompress_trial_finished():\n    assert 'autocompress_trial_finished'\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "TEST_DIRS", (tmp_path / "tests",))
    with pytest.raises(AssertionError, match="never implement autocompress_trial_finished"):
        test_hook_has_a_test_that_implements_it("autocompress_trial_finished")
    with pytest.raises(AssertionError, match="no test function named test_hook_autocompress_report_sections"):
        test_hook_has_a_test_that_implements_it("autocompress_report_sections")
