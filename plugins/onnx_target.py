"""The ONNX Runtime target: the candidate exported to ONNX and run by ONNX Runtime on the local CPU.

Latency is timed like the CPU target's (fixed intra-op thread count, warm-up, median and p90 of
many runs of one batch); memory is the size of the exported model (its weights, as ONNX Runtime
loads them) plus the peak growth of resident memory while running it. The target is always
listed; when onnx, onnxscript or onnxruntime is missing, choosing it fails before the search
starts with the command that installs them.

int8 candidates run ONNX Runtime's own int8 kernels (see ``autocompress.onnx_export``), and their
accuracy is scored under ONNX Runtime too (``runtime``). Static int8 candidates
(``autocompress.deployment.StaticInt8Request``) are quantized by ONNX Runtime's static QDQ
quantizer, calibrated on their sample of training texts, their float layers left in float. A
candidate this target cannot run (bf16 weights) fails its trial with that reason; the search goes on.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from torch import nn

from autocompress import hookimpl
from autocompress.deployment import StaticInt8Request
from autocompress.measure import (
    Measurement,
    MeasureSettings,
    Target,
    memory_growth,
    parameter_count,
    time_calls,
)
from autocompress.onnx_export import (
    INSTALL_HINT,
    OnnxRuntimeModule,
    example_inputs,
    export_onnx,
    missing_packages,
    onnx_session,
    session_feed,
)
from autocompress.runtime_cache import PerModelCache

#: Sequence length of the example traced for an export made to score accuracy (both axes stay
#: dynamic, so any length runs; a model measured first is not exported again).
SCORING_SEQ_LEN = 64


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    description = "the candidate exported to ONNX, run by ONNX Runtime on the local CPU (extra: onnx)"
    handles_requests = (StaticInt8Request,)  # static QDQ, calibrated on the request's sample

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="autocompress-onnx-")
        # The teacher is measured beside every candidate: export it (and any unchanged model) once.
        self._exports: PerModelCache[Path] = PerModelCache(cleanup=functools.partial(Path.unlink, missing_ok=True))
        self._count = 0

    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = missing_packages()
        if missing:
            return f"it needs {', '.join(missing)}: run {INSTALL_HINT} (or pip install {' '.join(missing)})"
        return None

    def exported(self, model: nn.Module, seq_len: int) -> Path:
        """The model's ONNX file, exported now unless this same, unchanged model was exported before.

        A file lives as long as its model and stays unchanged: it is deleted when the model is
        garbage-collected or changed and exported again (a search makes one or two per trial, each
        the size of the model's weights; open sessions keep their own copy in memory).
        """
        def build() -> Path:
            self._count += 1
            return export_onnx(model, Path(self._directory.name) / f"model-{self._count}.onnx", seq_len)

        return self._exports.get(model, build)

    def runtime(self, model: nn.Module) -> nn.Module:
        """The model's ONNX graph under ONNX Runtime (accuracy is scored on what is measured: an
        int8 candidate runs ONNX Runtime's int8 kernels, which round unlike torch's)."""
        return OnnxRuntimeModule(onnx_session(self.exported(model, SCORING_SEQ_LEN)))

    def measure(self, model: nn.Module, settings: MeasureSettings) -> Measurement:
        model.eval()
        path = self.exported(model, settings.seq_len)
        session = onnx_session(path, threads=settings.threads)
        feed = session_feed(session, example_inputs(model, settings.batch_size, settings.seq_len))

        def run() -> object:
            return session.run(None, feed)

        timings = time_calls(run, settings.warmup, settings.repeats)
        activation = memory_growth(run)
        return Measurement.from_timings(timings, path.stat().st_size, activation, parameter_count(model))


@hookimpl
def autocompress_register_targets(register):
    register.add(OnnxRuntimeTarget)
