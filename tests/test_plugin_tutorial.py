"""The tutorial of docs/plugins.md, run: its code blocks are the plugins, passed through the contract kit.

Part 1 (``position_trim``, a technique that changes a shape) is the python blocks of steps 2-4;
part 2 (``ffn_sharing``, a technique that ties weights) is the python block of step 7. If the
documentation drifts from what autocompress accepts, these tests fail.
"""

import importlib.util
import re
import sys
import tempfile
from pathlib import Path

from autocompress.testing import TechniqueContract

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _python_blocks(section: str) -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(f"\n{section}")
    end = text.find("\n### ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start: end if end > 0 else None], flags=re.S)


def _module(name: str, source: str):
    directory = Path(tempfile.mkdtemp(prefix="tutorial-"))
    (directory / f"{name}.py").write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


position_trim = _module("position_trim", "\n\n".join(
    _python_blocks("### 2. The module's imports")[0:1] + _python_blocks("### 3. The technique class")
    + _python_blocks("### 4. The hook")))
ffn_sharing = _module("ffn_sharing", _python_blocks("### 7. A technique that ties weights")[0])


class TestTutorialPositionTrim(TechniqueContract):
    # tests/test_position_trim.py of step 5, as written there
    technique = position_trim.PositionTrim
    plugin = position_trim
    mild_config = {"extra_positions": 0}
    strong_config = {"extra_positions": 0}
    bad_configs = [{"extra_positions": -1}, {"extra_positions": 1.5}, {"extra": 1}]
    reduces_latency = False
    mild_tolerance = 1e-5


class TestTutorialFfnSharing(TechniqueContract):
    technique = ffn_sharing.FfnSharing
    plugin = ffn_sharing
    mild_config = {"group_size": 2}
    # Groups of 2 is the mildest; measured 0.002-0.013 of the largest logit, 0.077 on ELECTRA.
    mild_tolerance = 0.08
    strong_config = {"group_size": 2}
    bad_configs = [{"group_size": 0}, {"group_size": 2.5}, {"groups": 2}]
    reduces_latency = False
