"""Per-trial resource limits: ``--trial-timeout`` and ``--trial-memory-mb``.

In the search process (``trial_limits``): a timer signal and a memory watchdog raise in the main
thread between Python bytecodes. In an isolated trial's child process (``address_space_limit``):
a hard cap on the address space, so an allocation over it fails at once.
"""

from __future__ import annotations

import gc
import resource
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TrialTimeout(Exception):
    """A trial ran past ``--trial-timeout``."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TrialTimeout in the main thread after ``seconds`` (checked between Python bytecodes,
    so a long native operation finishes first). No limit when ``seconds`` is None."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TrialTimeout(f"trial exceeded the per-trial time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class TrialMemoryExceeded(Exception):
    """A trial's process memory grew past ``--trial-memory-mb``."""


MEMORY_SIGNAL = signal.SIGUSR1
MEMORY_POLL_S = 0.1


@contextmanager
def memory_limit(megabytes: float | None, poll_s: float = MEMORY_POLL_S) -> Iterator[None]:
    """Raise TrialMemoryExceeded in the main thread once the process's resident memory has grown
    by more than ``megabytes`` since entry. No limit when ``megabytes`` is None.

    A watchdog thread samples the resident set size every ``poll_s`` seconds and, on excess,
    signals the main thread (SIGUSR1), whose handler raises. Limits, as with ``time_limit``: the
    exception is raised between Python bytecodes, so a long native operation finishes first, and
    a single allocation larger than the cap has already happened when it is detected (the trial
    then fails and its memory is freed). Growth is that of the whole process, and memory the
    allocator keeps after freeing counts until it is returned to the system.
    """
    if megabytes is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    import psutil

    process = psutil.Process()
    # Garbage left by earlier work (reference cycles holding tensors) is collected now, not during the
    # trial: collected then, it would lower the resident size and hide the trial's own growth.
    gc.collect()
    start = process.memory_info().rss
    cap = megabytes * 2**20
    grown: list[float] = []
    stop = threading.Event()
    main_thread = threading.main_thread().ident

    def watch() -> None:
        while not stop.wait(poll_s):
            growth = process.memory_info().rss - start
            if growth > cap:
                grown.append(growth / 2**20)
                signal.pthread_kill(main_thread, MEMORY_SIGNAL)
                return

    def exceeded(signum, frame):
        raise TrialMemoryExceeded(f"trial exceeded the per-trial memory limit of {megabytes:g} MB "
                                  f"(process memory grew by {grown[0]:.0f} MB during the trial)")

    previous = signal.signal(MEMORY_SIGNAL, exceeded)
    watchdog = threading.Thread(target=watch, name="trial-memory-watchdog", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        try:
            stop.set()
            watchdog.join()
        finally:
            # A signal not yet handled by now comes too late to matter: the trial is over.
            signal.signal(MEMORY_SIGNAL, previous)


@contextmanager
def trial_limits(seconds: float | None, megabytes: float | None) -> Iterator[None]:
    """The in-process per-trial limits: ``time_limit`` and ``memory_limit`` together."""
    with time_limit(seconds), memory_limit(megabytes):
        yield


@contextmanager
def address_space_limit(megabytes: float | None) -> Iterator[None]:
    """A hard cap: the process's address space may grow by ``megabytes`` from now on (RLIMIT_AS).
    An allocation over it fails at once; it is reported as TrialMemoryExceeded."""
    if megabytes is None:
        yield
        return
    import psutil

    size = psutil.Process().memory_info().vms
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + int(megabytes * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    except Exception as exc:
        if not _allocation_failure(exc):
            raise
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise TrialMemoryExceeded(
            f"trial exceeded the per-trial memory limit of {megabytes:g} MB (an allocation failed under the "
            f"child process's hard cap: {text[:300]})") from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


ALLOCATION_FAILED = ("can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory")


def _allocation_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it wraps (a technique's error names the technique and chains
    the original) is a failed allocation: MemoryError, or torch's allocator RuntimeError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return True
        if isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in ALLOCATION_FAILED):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
