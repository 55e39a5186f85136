"""The instruction-set features of this CPU that decide which compression pays off.

Which post-training step is fastest depends on the CPU, not on the model: int8 matrix products
are fast with VNNI (AVX-512 VNNI or AVX-VNNI) and very fast with AMX; bf16 is fast with AVX-512
BF16 and very fast with AMX-BF16; without them both fall back to slow emulation. The same plan
measured 5.8x faster than the teacher on an AMD EPYC and 2.7x on an Intel Xeon (DESIGN.md,
section 5), so every number autocompress records carries the features it was measured with.

``cpu_features()`` reads ``/proc/cpuinfo`` (Linux; elsewhere the flags are unknown) and
``torch.backends.cpu.get_cpu_capability()`` (the widest vector ISA PyTorch dispatches to), and
is cheap: torch is imported only when already loaded or when asked for.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Feature name -> the /proc/cpuinfo flags that provide it (any of them).
FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx512": ("avx512f",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_fp16": ("avx512_fp16",),
    "amx_int8": ("amx_int8",),
    "amx_bf16": ("amx_bf16",),
    "amx_fp16": ("amx_fp16",),
}


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU can do fast. ``flags_known`` False: no /proc/cpuinfo (not Linux), every flag False."""

    model: str
    flags_known: bool
    avx2: bool
    fma: bool
    avx512: bool
    avx512_vnni: bool
    avx_vnni: bool
    avx512_bf16: bool
    avx512_fp16: bool
    amx_int8: bool
    amx_bf16: bool
    amx_fp16: bool
    #: ``torch.backends.cpu.get_cpu_capability()``: e.g. ``AVX512``, ``AVX2``, ``DEFAULT``.
    torch_capability: str | None = None

    @property
    def int8_acceleration(self) -> str:
        """The fastest int8 matrix-product path: ``amx``, ``vnni`` or ``none``."""
        if self.amx_int8:
            return "amx"
        return "vnni" if self.avx512_vnni or self.avx_vnni else "none"

    @property
    def bf16_acceleration(self) -> str:
        """The fastest bf16 matrix-product path: ``amx``, ``avx512_bf16`` or ``none`` (emulated)."""
        if self.amx_bf16:
            return "amx"
        return "avx512_bf16" if self.avx512_bf16 else "none"

    def summary(self) -> str:
        """One line for reports and model cards, e.g. 'AMD EPYC: AVX-512, VNNI, AVX512-BF16, no AMX'."""
        if not self.flags_known:
            return f"{self.model}: instruction-set flags unknown (no /proc/cpuinfo)"
        parts = ["AVX-512" if self.avx512 else ("AVX2" if self.avx2 else "no AVX2")]
        if self.avx512_vnni or self.avx_vnni:
            parts.append("VNNI" if self.avx512_vnni else "AVX-VNNI")
        if self.avx512_bf16:
            parts.append("AVX512-BF16")
        if self.avx512_fp16:
            parts.append("AVX512-FP16")
        amx = [name for name, on in (("int8", self.amx_int8), ("bf16", self.amx_bf16), ("fp16", self.amx_fp16)) if on]
        parts.append(f"AMX ({', '.join(amx)})" if amx else "no AMX")
        torch_part = f"; PyTorch kernels: {self.torch_capability}" if self.torch_capability else ""
        return f"{self.model}: {', '.join(parts)}{torch_part}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "int8_acceleration": self.int8_acceleration,
                "bf16_acceleration": self.bf16_acceleration, "summary": self.summary()}


def parse_cpuinfo(text: str) -> tuple[str, set[str] | None]:
    """(CPU model name, flags of the first processor) from /proc/cpuinfo text; flags None if absent."""
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
        if model and flags is not None:
            break
    return model, flags


def torch_capability(import_torch: bool = True) -> str | None:
    """PyTorch's CPU capability, or None when torch is not (and should not be) imported."""
    if not import_torch and "torch" not in sys.modules:
        return None
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an old torch without the call, or no torch at all
        return None


def cpu_features(cpuinfo: str | None = None, import_torch: bool = True) -> CpuFeatures:
    """This machine's features, or those described by ``cpuinfo`` text (another machine's: then
    PyTorch's capability, which is this machine's, is left out)."""
    capability = None
    if cpuinfo is None:
        capability = torch_capability(import_torch)
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = parse_cpuinfo(cpuinfo)
    known = flags is not None
    flags = flags or set()
    found = {name: any(flag in flags for flag in group) for name, group in FLAG_GROUPS.items()}
    return CpuFeatures(model=model or platform.processor() or "unknown CPU", flags_known=known,
                       torch_capability=capability, **found)
