"""glibc's malloc set up for training on a CPU (``tune_malloc``, on by default).

Freed memory stays in the process: glibc's malloc adapts its thresholds to the allocation history, and in
some processes it settles into giving the activation buffers a training step frees back to the operating
system and page-faulting them in again on the next step: measured on 2-core CPUs as up to 10x the page
faults and 10-30% of MobileNetV3's training speed, varying from run to run. Buffers of every size from the
heap and a fixed, high trim threshold keep the memory for the next step, as jemalloc or tcmalloc would,
with no extra dependency.

Huge pages: where the kernel gives transparent huge pages only to memory that asks for them (``madvise``,
a common default), malloc asks when the process starts with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
(glibc 2.35+). The MB-sized activations then take 2 MiB pages instead of 4 KiB ones: fewer TLB misses and
page faults, measured 2-10% faster training steps on 2-core CPUs (MobileNetV3, ResNet-50, small CIFAR
CNNs). glibc reads tunables only at start-up, so the commands restart themselves once to set it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
# allocations up to this size come from the heap, not a fresh mmap: 32 MiB is glibc's ceiling on 64-bit
MMAP_THRESHOLD_BYTES = 32 * 2**20
# and larger ones too (glibc still mmaps when the heap cannot grow): a 64x64 MobileNetV3-large or ResNet-50
# at batch 128 has 33 MiB activations, mmapped and page-faulted afresh every step otherwise (3% of its step)
MMAP_MAX = 0
# free memory at the top of the heap is kept up to this size instead of being returned to the OS
TRIM_THRESHOLD_BYTES = 2**30

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

_tuned = False


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds, and serve buffers of every size from the heap, for the rest of
    this process (and processes it forks).

    Returns whether the process now runs with them: False where the C library is not glibc.
    """
    global _tuned
    if not _tuned and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL("libc.so.6")
        settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_MMAP_MAX, MMAP_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        _tuned = all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])
    return _tuned


def malloc_tuned() -> bool:
    """Whether :func:`keep_freed_memory` has tuned this process."""
    return _tuned


def _tunables(environ: Mapping[str, str]) -> list[str]:
    """The entries of ``GLIBC_TUNABLES`` in ``environ``."""
    return [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]


def huge_pages_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` asks glibc's malloc for transparent huge pages."""
    return HUGE_PAGES_TUNABLE in _tunables(environ)


# what this process started with: the bench takes the tunable out of os.environ for its conventional child
HUGE_PAGES = huge_pages_requested()


def transparent_huge_pages_mode() -> str | None:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``), None where it cannot be read."""
    try:
        return THP_MODE_FILE.read_text().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return None


def huge_pages_help() -> bool:
    """Whether starting with the tunable changes anything here: Linux, glibc 2.35+, THP mode ``madvise``
    (``always`` gives huge pages anyway, ``never`` not at all)."""
    libc, version = platform.libc_ver()
    if platform.system() != "Linux" or libc != "glibc" or transparent_huge_pages_mode() != "madvise":
        return False
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def relaunch_with_huge_pages(args: Sequence[str]) -> None:
    """Restart this process (same interpreter, options and arguments) with glibc's malloc asking for
    transparent huge pages, where that helps and it does not yet; returns only when it does not restart.

    ``args`` are the command's arguments: ``tune_malloc=false`` among them keeps glibc's defaults.
    """
    opted_out = any(a.lstrip("+~").lower() in ("tune_malloc=false", "tune_malloc=0") for a in args)
    if HUGE_PAGES or opted_out or not huge_pages_help():
        return
    tunables = ":".join([*_tunables(os.environ), HUGE_PAGES_TUNABLE])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "GLIBC_TUNABLES": tunables})


def children_without_huge_pages() -> None:
    """Processes started from here on begin with glibc's defaults (this one keeps its huge pages)."""
    tunables = [t for t in _tunables(os.environ) if t != HUGE_PAGES_TUNABLE]
    if tunables:
        os.environ["GLIBC_TUNABLES"] = ":".join(tunables)
    else:
        os.environ.pop("GLIBC_TUNABLES", None)
