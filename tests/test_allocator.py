"""tune_malloc: freed tensor memory stays in the process, so a training loop's activation buffers are not
page-faulted in again every step, and the commands restart once so that malloc asks for huge pages.
Checked in fresh processes by counting page faults and huge pages (the settings are process-wide)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from cnnlab.training.allocator import huge_pages_help

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")

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


# a command's start: restart for huge pages, then 64 MiB of tensor memory; prints what it got
COMMAND_START = """
import sys, torch
from cnnlab.training.allocator import HUGE_PAGES, relaunch_with_huge_pages
relaunch_with_huge_pages(sys.argv[1:])
memory = torch.ones(16 * 2**20)
print(HUGE_PAGES, open("/proc/self/smaps_rollup").read().split("AnonHugePages:")[1].split()[0])
"""


def run_python(code: str, *args: str) -> list[str]:
    """stdout's words of ``python -c code args``, started with glibc's default tunables."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
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


@pytest.mark.skipif(not huge_pages_help(), reason="needs glibc 2.35+ and the kernel's THP mode 'madvise'")
def test_a_command_restarts_once_with_huge_pages_unless_tune_malloc_is_off():
    requested, huge_kib = run_python(COMMAND_START, "data=eurosat")
    assert requested == "True" and int(huge_kib) >= 32 * 1024  # at least half of the 64 MiB in 2 MiB pages
    requested, huge_kib = run_python(COMMAND_START, "data=eurosat", "tune_malloc=false")
    assert requested == "False" and int(huge_kib) < 8 * 1024
