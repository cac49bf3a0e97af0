"""The process's memory allocator: glibc's malloc set to keep freed memory (``tune_malloc``, on by default),
and a record of the allocator settings the process was started with.

Freed memory stays in the process: glibc's malloc adapts its thresholds to the allocation history, and in
some processes it settles into giving the activation buffers a training step frees back to the operating
system and page-faulting them in again on the next step (up to 10x the page faults, ``tests/test_allocator.py``
counts them). Buffers of every size from the heap and a fixed, high trim threshold keep the memory for the
next step, as jemalloc or tcmalloc would, with no extra dependency. ``benchmarks/README.md`` has what it
gains in training speed.

The C library reads other settings only when the process starts, so they are the user's opt-in, recorded
under ``runtime`` in results.json: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc 2.35+; huge pages for
malloc where the kernel's transparent huge pages are ``madvise``) and ``LD_PRELOAD`` of jemalloc or tcmalloc
(which replace glibc's malloc, and so this module's settings).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping
from pathlib import Path

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
# allocations up to this size come from the heap, not a fresh mmap: 32 MiB is glibc's ceiling on 64-bit
MMAP_THRESHOLD_BYTES = 32 * 2**20
# and larger ones too (glibc still mmaps when the heap cannot grow): a 64x64 MobileNetV3-large or ResNet-50
# at batch 128 has 33 MiB activations, mmapped and page-faulted afresh every step otherwise
MMAP_MAX = 0
# free memory at the top of the heap is kept up to this size instead of being returned to the OS
TRIM_THRESHOLD_BYTES = 2**30

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
# the malloc replacements recognized among the process's shared objects, by file-name prefix
PRELOADABLE_ALLOCATORS = {"libjemalloc": "jemalloc", "libtcmalloc": "tcmalloc"}
PROCESS_MAPS = Path("/proc/self/maps")

_tuned = False


def preloaded_allocator(maps: Path = PROCESS_MAPS) -> str | None:
    """``jemalloc`` or ``tcmalloc`` when one is loaded into this process (``LD_PRELOAD``), None for the C
    library's own malloc (or where the process's mappings cannot be read)."""
    try:
        mapped = {Path(line.split()[-1]).name for line in maps.read_text().splitlines() if "/" in line}
    except OSError:
        return None
    return next(
        (name for prefix, name in PRELOADABLE_ALLOCATORS.items() if any(m.startswith(prefix) for m in mapped)), None
    )


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds, and serve buffers of every size from the heap, for the rest of
    this process (and processes it forks).

    Returns whether the process now runs with them: False where malloc is not glibc's (another C library,
    or jemalloc or tcmalloc preloaded).
    """
    global _tuned
    if (
        not _tuned
        and platform.system() == "Linux"
        and platform.libc_ver()[0] == "glibc"
        and preloaded_allocator() is None
    ):
        libc = ctypes.CDLL("libc.so.6")
        settings = (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (M_MMAP_MAX, MMAP_MAX),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        )
        _tuned = all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])
    return _tuned


def malloc_tuned() -> bool:
    """Whether :func:`keep_freed_memory` has tuned this process."""
    return _tuned


def huge_pages_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` (by default this process's, which glibc read at start-up) asks glibc's malloc
    for transparent huge pages."""
    return HUGE_PAGES_TUNABLE in environ.get("GLIBC_TUNABLES", "").split(":")
