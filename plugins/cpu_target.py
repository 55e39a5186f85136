"""The CPU target: PyTorch eager inference on this machine's cores, fixed thread count."""

from autocompress import hookimpl
from autocompress.measure import Measurement, MeasureSettings, Target, measure_eager


class CpuTarget(Target):
    name = "cpu"
    description = "PyTorch eager mode on the local CPU (threads fixed by the run settings)"

    def measure(self, model, settings: MeasureSettings) -> Measurement:
        return measure_eager(model, settings)


@hookimpl
def autocompress_register_targets(register):
    register.add(CpuTarget)
