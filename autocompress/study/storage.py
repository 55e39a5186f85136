"""Opening a study's storage: Optuna's RDB storage, with the schema race of fresh databases retried
and errors that name the URL (its password masked)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import optuna

from autocompress.errors import InputError

# Processes that open a fresh database at the same moment (workers started together, or a
# dashboard opened as a search starts) race to create Optuna's tables: the losers see "table
# already exists", a duplicate schema-version row or a locked SQLite file. The winner finishes the
# schema within moments, after which opening again succeeds.
SCHEMA_RACE = ("already exists", "unique constraint failed", "duplicate key", "database is locked")
SCHEMA_RACE_TRIES = 8


def _open_rdb_storage(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    import sqlalchemy.exc

    for attempt in range(1, SCHEMA_RACE_TRIES):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.DatabaseError as exc:
            if not any(sign in str(exc).lower() for sign in SCHEMA_RACE):
                raise
            time.sleep(0.1 * attempt)
    return optuna.storages.RDBStorage(url, **kwargs)  # the last try: its error is the one reported


def open_storage(url: str, heartbeat_s: float | None = None) -> optuna.storages.BaseStorage:
    """The storage at ``url``; InputError naming the URL when it is not one or cannot be opened.

    ``heartbeat_s``: a search worker's heartbeat interval; a trial whose worker is silent for
    4x this is failed and retried once (None: no heartbeat, for readers).
    """
    if "://" not in url:
        raise InputError(f"--storage {url!r} is not a database URL (e.g. sqlite:///study.db, "
                         "postgresql://user@127.0.0.1/db)")
    options: dict[str, Any] = {
        "engine_kwargs": {"pool_pre_ping": True} if not url.startswith("sqlite") else None,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat_s is not None:
                options.update(
                    heartbeat_interval=max(1, round(heartbeat_s)),
                    grace_period=max(2, round(4 * heartbeat_s)),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
            return _open_rdb_storage(url, **options)
    except Exception as exc:  # sqlalchemy and driver errors: bad URL, server down, missing driver
        detail = " ".join(str(exc).split("\n(Background on this error")[0].split())
        detail = detail.replace(url, public_url(url))
        raise InputError(f"--storage {public_url(url)!r}: cannot open ({type(exc).__name__}: {detail}); "
                         "expected a reachable "
                         "database URL such as sqlite:///runs/study.db or postgresql://user:password@host/db"
                         ) from None


def public_url(url: str) -> str:
    """A storage URL safe to write into reports: the password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."
