"""The OpenVINO target: the candidate converted to OpenVINO and run by its CPU plugin.

Measured like every target: ``--threads`` inference threads (``INFERENCE_NUM_THREADS``, one
stream, latency mode), ``--warmup`` untimed runs, then the median and p90 of ``--repeats`` timed
synchronous inferences of one batch (``--batch-size`` x ``--seq-len`` random tokens). Memory: the
bytes of the model's weights as the CPU plugin holds them (int8 weights as int8, f32 at 2 bytes
under bf16 precision; see ``autocompress.openvino_runtime.weight_bytes``) plus the peak growth
of resident memory while inferring, sampled the same way as for the other targets.

What runs: float candidates at f32 precision (asked for explicitly: the plugin defaults to bf16
on CPUs that have it), bf16 candidates at bf16 precision (refused on a CPU without bf16), dynamic
int8 candidates with NNCF int8 weights, static int8 requests through NNCF's calibrated
quantization. Accuracy is scored on the same compiled model (``runtime``). The target is always
listed; without openvino and nncf it fails before the search starts, naming the extra.
"""

from __future__ import annotations

from torch import nn

from autocompress import hookimpl
from autocompress.deployment import StaticInt8Request
from autocompress.measure import Measurement, MeasureSettings, Target, memory_growth, parameter_count, time_calls
from autocompress.openvino_runtime import (
    INSTALL_HINT,
    Converted,
    OpenVinoModule,
    compile_model,
    convert,
    feed,
    missing_packages,
)
from autocompress.runtime_cache import PerModelCache


class OpenVinoTarget(Target):
    name = "openvino"
    description = "the candidate converted to OpenVINO, run by its CPU plugin (f32/bf16/int8; extra: openvino)"
    handles_requests = (StaticInt8Request,)  # NNCF, calibrated on the request's sample

    def __init__(self) -> None:
        # The teacher is measured beside every candidate: convert it (and any unchanged model) once.
        self._converted: PerModelCache[Converted] = PerModelCache()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = missing_packages()
        if missing:
            return f"it needs {', '.join(missing)}: run {INSTALL_HINT} (or pip install {' '.join(missing)})"
        return None

    def converted(self, model: nn.Module) -> Converted:
        """``model`` as OpenVINO runs it, converted now unless this same, unchanged model was before."""
        return self._converted.get(model, lambda: convert(model))

    def runtime(self, model: nn.Module) -> nn.Module:
        """The compiled model (all cores), called like the classifier: accuracy of what is measured."""
        converted = self.converted(model)
        return OpenVinoModule(compile_model(converted), converted.input_names)

    def measure(self, model: nn.Module, settings: MeasureSettings) -> Measurement:
        from autocompress.onnx_export import example_inputs

        model.eval()
        converted = self.converted(model)
        compiled = compile_model(converted, threads=settings.threads)
        request = compiled.create_infer_request()
        arrays = feed(converted.input_names, example_inputs(model, settings.batch_size, settings.seq_len))

        def run() -> object:
            return request.infer(arrays)

        timings = time_calls(run, settings.warmup, settings.repeats)
        activation = memory_growth(run)
        return Measurement.from_timings(timings, converted.weight_bytes, activation, parameter_count(model))


@hookimpl
def autocompress_register_targets(register):
    register.add(OpenVinoTarget)
