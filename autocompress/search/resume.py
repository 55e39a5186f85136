"""What lets a search stop and go on: the run directory's lock, the repair of trials a dead process
left running, the budget count, and the refusal of a run directory that holds another study.

Re-running the same command loads the same study and runs only the trials still missing from the
budget; a trial left RUNNING by a killed process is marked FAIL ("interrupted") and its
parameters are queued again.
"""

from __future__ import annotations

import fcntl
import json
from typing import TYPE_CHECKING, Any

import optuna

from autocompress.errors import InputError
from autocompress.study.layout import RunLayout
from autocompress.study.record import COUNTED, ENDED, RETRY_OF, Ended, TrialRecorder

if TYPE_CHECKING:
    from autocompress.measure import MeasureSettings


class RunLock:
    """An exclusive lock on the run directory: one process owns the default SQLite study."""

    def __init__(self, layout: RunLayout):
        self.path = layout.lock
        self.handle = None

    def __enter__(self) -> RunLock:
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{self.path.parent}: another autocompress search is using this run directory; "
                             "use --storage with a database server to run several workers") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class _StoredTrial:
    """A trial in the storage, written through ``TrialRecorder`` like a live one."""

    def __init__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial):
        self.storage, self.trial_id = study._storage, trial._trial_id
        self.user_attrs: dict[str, Any] = dict(trial.user_attrs)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)
        self.user_attrs[key] = value


def repair_interrupted_trials(study: optuna.Study) -> int:
    """Mark trials a killed process left RUNNING as FAIL ("interrupted") and queue their parameters
    again. Only for a study this process owns alone (the default SQLite file): a RUNNING trial of a
    shared database may belong to a live worker (the heartbeat handles those)."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        record = TrialRecorder(_StoredTrial(study, trial))
        record.stopped(Ended.INTERRUPTED, "the search process ended during this trial")
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)
        count += 1
    return count


def counted_trials(study: optuna.Study) -> int:
    """Trials that used up the budget: those that ended on their own (complete, infeasible, pruned,
    failed). Trials cut short by a dead or stopped process do not count."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ENDED) in COUNTED)


#: What a latency and a memory figure mean: a resumed search must measure them as the trials it continues did.
MEASURED_AS = ("batch_size", "seq_len", "threads", "latency")


def check_run_dir(layout: RunLayout, study_name: str, fingerprint: str | None,
                  measure: MeasureSettings | None = None) -> None:
    """Refuse a run directory that holds a different study (never mix two searches), or one whose
    trials were measured otherwise than ``measure`` says (batch, sequence length, threads, latency mode)."""
    if not layout.run_json.is_file():
        return
    previous = json.loads(layout.run_json.read_text())
    if previous.get("study") != study_name:
        raise InputError(f"{layout.root} holds study '{previous.get('study')}', not '{study_name}'; "
                         "choose another --out or the same --study")
    if fingerprint is not None and previous.get("task_fingerprint") not in (None, fingerprint):
        raise InputError(f"{layout.root} holds a search of a different model/data (or metric) "
                         f"({previous.get('task_fingerprint')} vs {fingerprint}); choose another --out")
    recorded = previous.get("measure") or {}
    if measure is not None and recorded:
        recorded = {"latency": "prompt", **{k: v for k, v in recorded.items() if v is not None}}
        differ = [f"--{name.replace('_', '-')} {recorded[name]} (now {getattr(measure, name)})"
                  for name in MEASURED_AS if name in recorded and recorded[name] != getattr(measure, name)]
        if differ:
            raise InputError(f"{layout.root}: its trials were measured with {', '.join(differ)}; a resumed search "
                             "measures as they were, so pass the same options or choose another --out")
