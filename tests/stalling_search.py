"""``autocompress`` with one trial held in its middle: ``python tests/stalling_search.py search ...``.

Trial number ``$STALL_TRIAL`` (default 2), once its plan is sampled and recorded, creates the
file ``$STALL_MARKER`` and sleeps, until a test kills or signals the process: "mid-trial" without
racing against the trial's end.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from autocompress import cli
from autocompress.search import objective

run_trial = objective.InProcess.evaluate
#: How long the held trial sleeps: far longer than any test waits for, so a process that ends
#: sooner was stopped (by the signal a test sent), not finished.
STALL_S = 600.0


def stall(self, trial, plan):
    if trial.number == int(os.environ.get("STALL_TRIAL", "2")):
        open(os.environ["STALL_MARKER"], "w").close()
        time.sleep(STALL_S)
    return run_trial(self, trial, plan)


def start(arguments: list[str], marker: Path, trial: int = 2, **popen) -> subprocess.Popen:
    """``autocompress <arguments>`` in a process that holds trial ``trial`` and then creates ``marker``."""
    env = {**os.environ, "STALL_TRIAL": str(trial), "STALL_MARKER": str(marker)}
    return subprocess.Popen([sys.executable, __file__, *arguments], env=env, **popen)


def wait_until_held(process: subprocess.Popen, marker: Path) -> bool:
    """True once ``process`` holds its trial; False if it ended first. No clock: a process either
    reaches the held trial or ends, however slow the machine is."""
    while not marker.exists():
        if process.poll() is not None:
            return marker.exists()
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    objective.InProcess.evaluate = stall
    sys.exit(cli.main(sys.argv[1:]))
