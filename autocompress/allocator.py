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
before memory is sampled, so the growth measured is the pass's working memory whatever ran
before. Neither does anything off glibc (macOS, musl).
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
