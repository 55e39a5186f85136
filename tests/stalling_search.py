"""``autocompress`` with one trial held in its middle: ``python tests/stalling_search.py search ...``.

Trial number ``$STALL_TRIAL`` (default 2), once its plan is sampled and recorded, creates the
file ``$STALL_MARKER`` and sleeps, until a test kills or signals the process: "mid-trial" without
racing against the trial's end.
"""

import os
import sys
import time

from autocompress import cli
from autocompress.search import objective

run_trial = objective.Objective._run


def stall(self, trial, plan):
    if trial.number == int(os.environ.get("STALL_TRIAL", "2")):
        open(os.environ["STALL_MARKER"], "w").close()
        time.sleep(600)
    return run_trial(self, trial, plan)


if __name__ == "__main__":
    objective.Objective._run = stall
    sys.exit(cli.main(sys.argv[1:]))
