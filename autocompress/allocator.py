"""glibc malloc settings that make eager PyTorch's latency and memory independent of process history.

PyTorch's CPU tensors come from glibc's malloc. By default glibc serves blocks above a *dynamic*
threshold (128 KB at start, raised to the size of each mmapped block freed, up to 32 MB) with
their own ``mmap``, and returns free memory at the top of the heap to the system (trim). So the
same forward pass behaves differently in a process that has trained students for minutes (a
search: the threshold has risen, the heap is large) and in a fresh one (a user's deployment, or
the benchmark's fresh-process re-measurement), measured here on a 3-layer MiniLM-sized model,
batch 16, sequence 64 (page faults are counted by the kernel, so the shared machine's load does
not blur them):

- latency: a fresh process took 7,600 minor page faults per forward (activations mapped,
  zeroed by the kernel and unmapped on every pass), a process that had trained before about 0;
- memory: the resident-memory growth of inference was 4.4 MB fresh and 0.0 MB after training
  (the heap already held the freed pages).

``steady_allocator()`` (called before every eager measurement; once per process) fixes both
thresholds, which also turns glibc's adjustment off: blocks below 32 MB come from the heap and up
to 256 MB of free heap is kept, so after warm-up a forward pass reuses memory in any process, as
in a long-running server. ``release_free_memory()`` (``malloc_trim``) returns free heap memory
before memory is sampled.

Working memory is then read from the allocator itself (``heap_in_use()``: glibc's ``mallinfo2``,
bytes handed out and not yet freed), not from the resident set: which freed pages a pass touches
again depends on where earlier frees left holes in the heap, so the resident-memory growth of the
same pass on the same 2-layer model read 24-35 MB in a fresh process and 24-39 MB after training
(four runs each), while the bytes in use peaked at 16.5 MB in both. Off glibc (macOS, musl)
nothing here does anything and memory falls back to the resident set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 256 * 2**20


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (and mallopt's parameters)
    except (OSError, AttributeError):
        return None
    return libc


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@functools.lru_cache(maxsize=1)
def _mallinfo2():
    libc = _glibc()
    function = getattr(libc, "mallinfo2", None) if libc is not None else None  # glibc >= 2.33
    if function is not None:
        function.restype = _MallInfo2
        function.argtypes = []
    return function


def heap_in_use() -> int | None:
    """Bytes malloc has handed out and not yet freed, in every arena (mmapped blocks included); None
    off glibc. About 2 microseconds a call."""
    function = _mallinfo2()
    if function is None:
        return None
    info = function()
    return info.uordblks + info.hblkhd


@functools.lru_cache(maxsize=1)
def steady_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; True when glibc took them."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                      TRIM_THRESHOLD))


def release_free_memory() -> None:
    """Return free heap memory to the system (``malloc_trim(0)``), so memory growth starts from the same floor."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
