"""Run the command line in a fresh process where some packages look not installed.

Used to prove that a missing package ends a command with a message saying what to install,
never a traceback: the child imports as usual, except that the named top-level modules are not
found (``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` returns None, as
for a package that was never installed).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

CHILD = """
import importlib.util, sys

BLOCKED = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


_find_spec = importlib.util.find_spec


def find_spec(name, package=None):
    if name.split(".")[0] in BLOCKED:
        return None
    return _find_spec(name, package)


sys.meta_path.insert(0, NotInstalled())
importlib.util.find_spec = find_spec
if sys.argv[2] == "--import":
    __import__(sys.argv[3])
else:
    from autocompress.cli import main

    sys.exit(main(sys.argv[2:]))
"""


def run_without(modules: Sequence[str], args: Sequence[str]) -> subprocess.CompletedProcess:
    """``autocompress ARGS`` in a child process where ``modules`` are not installed."""
    return subprocess.run([sys.executable, "-c", CHILD, ",".join(modules), *args], capture_output=True, text=True)


def import_without(modules: Sequence[str], module: str) -> subprocess.CompletedProcess:
    """``import MODULE`` in a child process where ``modules`` are not installed."""
    return subprocess.run([sys.executable, "-c", CHILD, ",".join(modules), "--import", module],
                          capture_output=True, text=True)
