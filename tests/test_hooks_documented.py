"""Meta-tests: every hook in autocompress/hookspecs.py is documented, called by the host, and tested.

Adding a hook to hookspecs.py without a ``### <hook name>`` section in docs/plugins.md that names
its arguments, without host code that calls it (through pluggy, never an implementation by hand),
or without a test that implements it, fails here.
"""

import re
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


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_implemented_by_a_test(hook):
    tests = [p for d in TEST_DIRS if d.is_dir() for p in d.rglob("test_*.py") if p.resolve() != Path(__file__)]
    implementing = [p.name for p in tests if re.search(rf"\b{hook}\b", p.read_text(encoding="utf-8"))]
    assert implementing, f"no test implements {hook} (write a test plugin for it and let the host call it)"
