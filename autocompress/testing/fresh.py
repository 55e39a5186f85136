"""Code run in new Python processes, as a user who reloads a saved model runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def fresh_process_outputs(code: str, *args: str | os.PathLike, runs: int = 2,
                          env: Mapping[str, str] | None = None) -> list[str]:
    """The standard output of ``python -c code *args``, run ``runs`` times, each in a new interpreter (so
    nothing the test process loaded or registered helps). A reload check compares them: a saved model
    loaded fresh answers the same each time. A run that fails raises ``CalledProcessError`` with its
    output."""
    command = [sys.executable, "-c", code, *map(str, args)]
    return [subprocess.run(command, capture_output=True, text=True, check=True,
                           env=None if env is None else dict(env)).stdout for _ in range(runs)]
