"""Keeps freed tensor memory inside the process (``tune_malloc``, on by default).

glibc's malloc adapts its thresholds to the allocation history, and in some processes it settles into
giving the activation buffers a training step frees back to the operating system and page-faulting them in
again on the next step: measured on 2-core CPUs as up to 10x the page faults and 10-30% of MobileNetV3's
training speed, varying from run to run. Fixed, higher mmap and trim thresholds keep the memory for the
next step, as jemalloc or tcmalloc would, with no extra dependency.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# allocations up to this size come from the heap, not a fresh mmap: 32 MiB is glibc's ceiling on 64-bit
MMAP_THRESHOLD_BYTES = 32 * 2**20
# free memory at the top of the heap is kept up to this size instead of being returned to the OS
TRIM_THRESHOLD_BYTES = 2**30

_tuned = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for the rest of this process (and processes it forks).

    Returns whether the process now runs with them: False where the C library is not glibc.
    """
    global _tuned
    if not _tuned and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL("libc.so.6")
        _tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        )
    return _tuned


def malloc_tuned() -> bool:
    """Whether :func:`keep_freed_memory` has tuned this process."""
    return _tuned
