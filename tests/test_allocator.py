"""tune_malloc: freed tensor memory stays in the process, so a training loop's activation buffers are not
page-faulted in again every step; the allocator opt-ins of the environment (huge pages, jemalloc/tcmalloc)
are recorded as they are, never set by cnnlab. Checked in fresh processes by counting page faults and huge
pages (the settings are process-wide)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_results, run_dirs

from cnnlab.training.allocator import HUGE_PAGES_TUNABLE, preloaded_allocator

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")

# Debian's packages libjemalloc2 and libtcmalloc-minimal4, where installed
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

# a small CNN training on one batch of sys.argv[2] images (activations of 0.5 MiB per image); prints the
# page faults of steps 6-15
TRAINING_LOOP = """
import resource, sys, torch
from torch import nn
from cnnlab.training.allocator import keep_freed_memory, malloc_tuned
if sys.argv[1] == "tuned":
    assert keep_freed_memory() and malloc_tuned()
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32),
    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
)
optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
batch = int(sys.argv[2])
images, labels = torch.randn(batch, 3, 64, 64), torch.randint(0, 10, (batch,))
def step():
    optimizer.zero_grad()
    nn.functional.cross_entropy(net(images), labels).backward()
    optimizer.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


# 64 MiB of tensor memory; prints what this process records and how much of it is in huge pages
ALLOCATE = """
from cnnlab.training.allocator import huge_pages_requested, keep_freed_memory, preloaded_allocator
import torch
memory = torch.ones(16 * 2**20)
print(huge_pages_requested(), preloaded_allocator(), keep_freed_memory(),
      open("/proc/self/smaps_rollup").read().split("AnonHugePages:")[1].split()[0])
"""


def run_python(code: str, *args: str, **env_extra: str) -> list[str]:
    """stdout's words of ``python -c code args``, started with glibc's default tunables plus ``env_extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")} | env_extra
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env)
    return run.stdout.split()


def page_faults(mode: str, batch: int) -> int:
    return int(run_python(TRAINING_LOOP, mode, str(batch))[-1])


@pytest.mark.parametrize("batch", [32, 80], ids=["16MiB", "40MiB"])  # 40 MiB: above glibc's largest mmap threshold
def test_tuned_malloc_stops_refaulting_activation_buffers(batch):
    default, tuned = page_faults("default", batch), page_faults("tuned", batch)
    activation_pages = batch * 32 * 64 * 64 * 4 // 4096
    # glibc's default gives freed activations back to the OS: more than one refaulted per step on average
    assert default > 10 * activation_pages
    assert tuned < default / 10


def thp_on_request() -> bool:
    """Whether the kernel gives transparent huge pages to memory that asks (mode ``madvise``) and glibc can ask
    (2.35+)."""
    version = tuple(int(part) for part in platform.libc_ver()[1].split(".")[:2])
    return THP_MODE.exists() and "[madvise]" in THP_MODE.read_text() and version >= (2, 35)


def test_huge_pages_only_when_the_environment_asks():
    requested, _, _, huge_kib = run_python(ALLOCATE)
    assert requested == "False"
    if thp_on_request():
        assert int(huge_kib) < 8 * 1024  # cnnlab does not ask by itself
        requested, _, _, huge_kib = run_python(ALLOCATE, GLIBC_TUNABLES=HUGE_PAGES_TUNABLE)
        assert requested == "True" and int(huge_kib) >= 32 * 1024  # at least half of the 64 MiB in 2 MiB pages


@pytest.mark.parametrize("library, name", [(JEMALLOC, "jemalloc"), (TCMALLOC, "tcmalloc")])
def test_a_preloaded_allocator_is_recognized_and_left_untuned(library, name):
    if not library.exists():
        pytest.skip(f"{library} is not installed")
    _, preloaded, tuned, _ = run_python(ALLOCATE, LD_PRELOAD=str(library))
    assert preloaded == name and tuned == "False"  # mallopt would set the thresholds of a malloc nobody calls
    _, preloaded, tuned, _ = run_python(ALLOCATE)
    assert preloaded == "None" and tuned == "True"


def test_preloaded_allocator_reads_the_process_mappings(tmp_path):
    maps = tmp_path / "maps"
    libc = "7f0000000000-7f0000001000 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    maps.write_text(libc + "7f0000002000-7f0000003000 rw-p 00000000 00:00 0 [heap]\n")
    assert preloaded_allocator(maps) is None
    maps.write_text(libc + "7f0000004000-7f0000005000 r-xp 00000000 08:01 43 /opt/lib/libtcmalloc_minimal.so.4.5.10\n")
    assert preloaded_allocator(maps) == "tcmalloc"
    assert preloaded_allocator(tmp_path / "missing") is None


def test_a_run_records_the_allocator_opt_ins_of_its_environment(cnnlab):
    """results.json says what the run was started with: the huge-pages tunable, and jemalloc where installed."""
    env = {"GLIBC_TUNABLES": HUGE_PAGES_TUNABLE} | ({"LD_PRELOAD": str(JEMALLOC)} if JEMALLOC.exists() else {})
    cnnlab("debug=smoke", "test=false", **env)
    (run,) = run_dirs(cnnlab.cwd)
    runtime = read_results(run)["runtime"]
    assert runtime["huge_pages"] is True
    assert runtime["preloaded_allocator"] == ("jemalloc" if JEMALLOC.exists() else None)
    assert runtime["malloc_tuned"] is not JEMALLOC.exists()
