"""Techniques that crash, hog memory or report a scripted curve, for tests/test_isolate.py.

They live in an importable module (registered as the module itself) because with ``--isolate``
each trial's child process imports the plugins registered in code by module path.
"""

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass

from optuna.distributions import CategoricalDistribution

from autocompress import hookimpl
from autocompress.technique import Stage, Technique

# A plugin that hangs at import, once, in a trial's child process (not in the search process): the
# first child to import this module while ISOLATE_TEST_HANG_ONCE names a file that does not exist
# yet creates it and never returns.
if os.environ.get("ISOLATE_TEST_HANG_ONCE") and multiprocessing.parent_process() is not None:
    try:
        open(os.environ["ISOLATE_TEST_HANG_ONCE"], "x").close()
    except FileExistsError:
        pass
    else:
        time.sleep(3600)


@dataclass(frozen=True)
class _CrashConfig:
    crash: bool = False


class Segfaulting(Technique):
    """Kills its own process with SIGSEGV when ``crash`` is true, like a broken native extension."""

    name = "segfaulting"
    stage = Stage.STRUCTURE
    Config = _CrashConfig

    @classmethod
    def search_space(cls):
        return {"crash": CategoricalDistribution([True, False])}

    def apply(self, model, config, context):
        if config.crash:
            os.kill(os.getpid(), signal.SIGSEGV)
        return model


@dataclass(frozen=True)
class _HogConfig:
    megabytes: int = 0


class MemoryHog(Technique):
    """Allocates (and writes) a torch tensor of ``megabytes`` MB."""

    name = "memory_hog"
    stage = Stage.STRUCTURE
    Config = _HogConfig

    @classmethod
    def search_space(cls):
        return {"megabytes": CategoricalDistribution([0, 1500])}

    def apply(self, model, config, context):
        if config.megabytes:
            import torch

            model.hog = torch.ones(config.megabytes * 2**20 // 4)
        return model


@dataclass(frozen=True)
class _CurveConfig:
    quality: float = 0.9


class IsolatedCurve(Technique):
    """A recovery step reporting a flat validation curve at its ``quality`` (weak ones get pruned)."""

    name = "isolated_curve"
    stage = Stage.RECOVER
    Config = _CurveConfig

    @classmethod
    def search_space(cls):
        return {"quality": CategoricalDistribution([0.3, 0.9])}

    def apply(self, model, config, context):
        for step in (100, 200, 300, 400):
            context.report(step, config.quality)
        return model


@dataclass(frozen=True)
class _SleepConfig:
    #: Far longer than any test search takes: a trial that ends sooner was stopped.
    seconds: float = 600.0


class Sleeping(Technique):
    """Sleeps ``seconds`` (a trial to time out or to interrupt)."""

    name = "sleeping"
    stage = Stage.STRUCTURE
    Config = _SleepConfig

    @classmethod
    def search_space(cls):
        return {"seconds": CategoricalDistribution([600.0])}

    def apply(self, model, config, context):
        if os.environ.get("ISOLATE_TEST_MARKER"):  # tells a test that the trial is under way
            open(os.environ["ISOLATE_TEST_MARKER"], "w").close()
        time.sleep(config.seconds)
        return model


@hookimpl
def autocompress_register_techniques(register):
    register.add(Sleeping)
    register.add(Segfaulting)
    register.add(MemoryHog)
    register.add(IsolatedCurve)
