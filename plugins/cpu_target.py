"""The CPU target: PyTorch eager inference on this machine's cores, fixed thread count.

Static int8 (``autocompress.deployment.StaticInt8Request``) is refused: PyTorch eager's own static
path (``torch.ao`` eager-mode static quantization, x86 engine, a quantize/dequantize pair around
every linear) measured no faster than dynamic int8 on the demo-sized model here (thread CPU time,
one thread, batch 1, sequence 64: dynamic 11.1-14.8 ms, static 13.6-15.5 ms), and it adds a
calibrated output rounding per linear. Static int8 runs on the onnxruntime and openvino targets.
"""

from autocompress import hookimpl
from autocompress.deployment import StaticInt8Request
from autocompress.errors import ExportError
from autocompress.measure import Measurement, MeasureSettings, Target, measure_eager

STATIC_INT8_REFUSAL = ("the cpu target runs PyTorch eager, whose static int8 is no faster than dynamic int8 here; "
                       "use quantization dtype int8 on this target, or static int8 on --target onnxruntime or "
                       "--target openvino")


class CpuTarget(Target):
    name = "cpu"
    description = "PyTorch eager mode on the local CPU (threads fixed by the run settings)"
    handles_requests = (StaticInt8Request,)  # refused with the reason above
    latency_modes = ("prompt", "token")

    def measure(self, model, settings: MeasureSettings) -> Measurement:
        return measure_eager(self.runtime(model), settings)

    def runtime(self, model):
        """The model itself; static int8, which only a compiled runtime finishes, is refused."""
        if isinstance(model, StaticInt8Request):
            raise ExportError(STATIC_INT8_REFUSAL)
        return model


@hookimpl
def autocompress_register_targets(register):
    register.add(CpuTarget)
