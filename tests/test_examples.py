"""The notebook-style example runs top to bottom: a tiny search through the Python API, its front plotted."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "api_quickstart.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_api_quickstart_notebook_runs_and_plots_its_front(tmp_path):
    env = dict(os.environ, AUTOCOMPRESS_EXAMPLE_DIR=str(tmp_path), MPLBACKEND="Agg", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for number in range(3):
        assert f"trial {number}: " in result.stdout
    assert "SearchResult(" in result.stdout and "latency_ms" in result.stdout
    assert (tmp_path / "front.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "shipped" / "README.md").is_file() and (tmp_path / "run" / "report.html").is_file()
