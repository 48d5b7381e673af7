"""glibc malloc in CPU scoring processes: keep freed memory for the next forward instead of returning it.

A forward allocates and frees activations of a few MiB each, op after op. glibc serves blocks above its
mmap threshold (128 KiB until it adapts) with fresh mappings and trims the heap top on free, so each op's
output page-faults newly zeroed pages. vLLM's CPU build preloads tcmalloc into its workers for the same
reason. Setting the mmap threshold to glibc's 64-bit maximum and a high trim threshold keeps the blocks in
the heap: ~10% faster forwards on the CPU peer benchmark (bench/RESULTS.md). The cost: the heap keeps up to
its peak (a forward's activations) after the forward ends. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30  # free memory above this at the heap top is still returned

_applied = False


def keep_freed_memory() -> bool:
    """Apply the thresholds once per process; True when this process's glibc took them."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; setting either threshold also stops glibc's own adaptation of both.
    _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if _applied:
        log.info("glibc malloc keeps freed blocks up to %d MiB (mmap threshold) for reuse", MMAP_THRESHOLD >> 20)
    return _applied
