"""Every built-in target passes the target contract kit, and the kit rejects a broken target."""

import copy
from types import SimpleNamespace

import pytest
import torch

from autocompress.errors import ExportError
from autocompress.measure import Measurement, Target, measure_eager
from autocompress.plugins.cpu_target import CpuTarget
from autocompress.plugins.onnx_target import OnnxRuntimeTarget
from autocompress.plugins.openvino_target import OpenVinoTarget
from autocompress.testing import TargetContract
from autocompress.testing.target_contract import (
    SETTINGS,
    check_measurement,
    check_runtime_agrees,
    check_variant,
    trained_tiny,
)


class TestCpuTarget(TargetContract):
    target = CpuTarget
    runs = frozenset({"int8", "bf16"})  # static int8 is refused: no faster than dynamic in PyTorch eager
    float_tolerance = 0.0


class TestOnnxRuntimeTarget(TargetContract):
    target = OnnxRuntimeTarget
    runs = frozenset({"int8", "int8-static"})  # no bf16 kernels in ONNX Runtime's CPU provider


class TestOpenVinoTarget(TargetContract):
    target = OpenVinoTarget
    runs = frozenset({"int8", "bf16", "int8-static"})


# -- the kit rejects what it must ------------------------------------------------------------
class _Broken(Target):
    name = "broken"

    def measure(self, model, settings):
        return measure_eager(model, settings)


@pytest.fixture
def trained():
    return trained_tiny()


def test_a_measurement_that_is_not_positive_or_consistent_is_rejected(trained):
    good = check_measurement(measure_eager(trained.model, SETTINGS), trained.model)
    for broken in (good.__class__(**{**good.as_dict(), "latency_ms": 0.0}),
                   good.__class__(**{**good.as_dict(), "latency_p90_ms": good.latency_ms / 2}),
                   good.__class__(**{**good.as_dict(), "memory_mb": good.model_mb / 2}),
                   good.__class__(**{**good.as_dict(), "parameters": 1})):
        with pytest.raises(AssertionError):
            check_measurement(broken, trained.model)
    with pytest.raises(AssertionError, match="not Measurement"):
        check_measurement({"latency_ms": 1.0}, trained.model)


def test_a_runtime_that_disagrees_with_pytorch_is_rejected(trained):
    class Shuffled(torch.nn.Module):  # right shapes, wrong answers: the logits' classes swapped
        def forward(self, **inputs):
            return SimpleNamespace(logits=trained.model(**inputs).logits.flip(-1))

    assert check_runtime_agrees(trained.model, trained.model, trained.evaluation, 0.0, 1.0) == 1.0
    with pytest.raises(AssertionError, match="differ from PyTorch"):
        check_runtime_agrees(Shuffled(), trained.model, trained.evaluation, 1e-3, 1.0)
    with pytest.raises(AssertionError, match="agree with PyTorch"):
        check_runtime_agrees(Shuffled(), trained.model, trained.evaluation, None, 0.9)


def test_a_target_that_crashes_or_refuses_silently_is_rejected(trained):
    class Crashes(_Broken):
        def measure(self, model, settings):
            raise TypeError("unsupported dtype")  # not an AutocompressError: a search would see a traceback

    class Mumbles(_Broken):
        def measure(self, model, settings):
            raise ExportError("no")

    bf16 = copy.deepcopy(trained.model).to(torch.bfloat16)
    with pytest.raises(AssertionError, match="must raise an AutocompressError"):
        check_variant(Crashes(), bf16, runs=False)
    with pytest.raises(AssertionError, match="must say why"):
        check_variant(Mumbles(), bf16, runs=False)
    with pytest.raises(AssertionError, match="should run"):
        check_variant(CpuTarget(), _static(trained), runs=True)
    with pytest.raises(AssertionError, match="declares it refuses"):
        check_variant(_Broken(), bf16, runs=False)
    assert isinstance(check_variant(_Broken(), bf16, runs=True), Measurement)


def _static(trained):
    return TestCpuTarget().deployed(trained, "int8-static")


def test_a_target_written_before_deployment_requests_refuses_them(trained):
    """A static int8 request runs its float model in PyTorch: a target that does not declare it
    handles requests must not time that as if it were int8."""
    static = _static(trained)
    with pytest.raises(ExportError, match="target 'broken' does not run static int8 candidates"):
        _Broken().measure(static, SETTINGS)
    with pytest.raises(ExportError, match="does not run static int8"):
        _Broken().runtime(static)
    assert _Broken().runtime(trained.model) is trained.model

    class Declares(_Broken):
        handles_requests = (type(static),)

    assert isinstance(Declares().measure(static, SETTINGS), Measurement)  # it said it handles them
