"""Trial observer: every finished trial as one JSON line in ``<run dir>/trials.jsonl``.

An append-only log a person can ``tail -f`` while a search runs, and that stays complete even
when a process dies before rewriting trials.csv. A built-in user of ``autocompress_trial_finished``,
written exactly as a third-party observer would be.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from autocompress import hookimpl

LOG = "trials.jsonl"


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


@hookimpl
def autocompress_trial_finished(trial_number, outcome, run_dir):
    if run_dir is None:
        return
    record = {"trial": trial_number, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **{k: _plain(v) for k, v in outcome.items()}}
    with open(Path(run_dir) / LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(record, default=str) + "\n")
