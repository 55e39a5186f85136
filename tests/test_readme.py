"""README's Python session runs as written (its printed figures are one run's measurements, not checked)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_session() -> list[str]:
    """The ``>>>`` lines of README's "Python API" section."""
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [line[4:] for line in block.splitlines() if line.startswith(">>> ")]


@pytest.mark.slow
def test_the_python_api_session_in_the_readme_runs(tmp_path, monkeypatch):
    lines = python_session()
    assert any("autocompress.compress(" in line for line in lines) and any("best.load()" in line for line in lines)
    monkeypatch.chdir(tmp_path)  # it writes tiny/ and runs/tiny where it runs
    namespace: dict = {}
    for line in lines:
        exec(compile(line, "README.md", "single"), namespace)
    assert len(namespace["result"].front) >= 1 and namespace["model"] is not None

