"""Keep freed memory in the process heap for the next batch instead of returning it to the kernel.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and
unmaps it when freed. A network's activations for one batch are such blocks (one TTA view of 512
faces through fer2013-vgg16: ~150 MiB per layer in bf16), so every batch of an evaluation maps
and zero-fills its memory afresh: on a 2-core Xeon (AMX) one TTA pass over PublicTest took 11.1 M
minor page faults and 29 of its 104 CPU-seconds in the kernel (53.5 s wall). With the threshold
and the heap's trim threshold raised to HEAP_RETAIN_BYTES the same pass took 0.11 M faults, 0.3
CPU-seconds in the kernel and 34.8 s (scripts/bench_heap.py). The cost: up to that much freed
memory stays mapped to the process between batches.

`fermetric` (the CLI) calls `retain_freed_memory()` once at start; Python users may call it too.
Elsewhere than Linux with glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger("fermetric.heap")

HEAP_RETAIN_BYTES = 1 << 30  # 1 GiB: above a batch's largest activation, below a training's footprint
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> parameter numbers


@functools.lru_cache(maxsize=None)
def _glibc():
    """glibc as a ctypes library, or None (another C library, another system)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it (musl does not)
        return libc
    except (OSError, AttributeError):
        return None


def retain_freed_memory(limit: int = HEAP_RETAIN_BYTES) -> bool:
    """Serve allocations below `limit` bytes from the heap and keep up to `limit` bytes of freed
    memory there (see the module docstring). Returns True when glibc took both settings."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(limit))) and bool(libc.mallopt(M_TRIM_THRESHOLD, int(limit)))
    if not ok:
        log.debug("glibc refused mallopt(%d); freed memory is returned to the kernel as before", limit)
    return ok
