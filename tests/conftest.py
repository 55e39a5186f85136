import os

import pytest

# Tests see only the built-in plugins unless a test loads entry points on purpose.
os.environ.setdefault("AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AUTOCOMPRESS_FREE_FLOOR", "none")  # the floor converts the teacher per runtime: minutes of CI


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
