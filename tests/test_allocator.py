"""tune_malloc: freed tensor memory stays in the process, so a training loop's activation buffers are not
page-faulted in again every step. Checked by counting page faults in fresh processes (the setting is
process-wide)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")

# a small CNN training on one batch (activations of 16 MiB each); prints the page faults of steps 6-15
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
images, labels = torch.randn(32, 3, 64, 64), torch.randint(0, 10, (32,))
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


def page_faults(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", TRAINING_LOOP, mode], capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


def test_tuned_malloc_stops_refaulting_activation_buffers():
    default, tuned = page_faults("default"), page_faults("tuned")
    activation_pages = 32 * 32 * 64 * 64 * 4 // 4096
    # glibc's default gives freed activations back to the OS: more than one refaulted per step on average
    assert default > 10 * activation_pages
    assert tuned < default / 10
