"""torch's intra-op threads for one cnnlab process among others on the same machine.

torch starts as many OpenMP threads as the process may use cores. Two such processes on the same cores
(parallel sweep jobs, DDP ranks on CPU) run twice the threads the cores hold; OpenMP threads that wait by
spinning then take the cores from the ones working, and a run slows far more than twofold. So each process
takes its share: the cores it may run on divided by the cnnlab processes started together on this machine
(``hydra/launcher=joblib``'s jobs times the CPU ranks of ``trainer.devices``, or torchrun's
``LOCAL_WORLD_SIZE``). An explicit ``threads=N``, or ``OMP_NUM_THREADS`` in the environment, wins.

Processes cnnlab cannot count (another user's, another tool's) still share the cores, so ``cnnlab`` also
sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: waiting OpenMP threads sleep instead of
spinning. On the shared 2-core machine of benchmarks/README.md that took a 2-thread run from 8.7-15.4 s to
2.7 s an epoch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which cgroups and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_processes(parallel_jobs: int, trainer: Any) -> int:
    """cnnlab processes started together on this machine: ``parallel_jobs`` sweep jobs, each with its CPU
    DDP ranks (``trainer.devices`` on CPU, or torchrun's ``LOCAL_WORLD_SIZE``)."""
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 0))
    if not ranks:
        devices = getattr(trainer, "get", lambda key, default=None: default)("devices")
        accelerator = str(getattr(trainer, "get", lambda key, default=None: default)("accelerator", "auto"))
        on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
        ranks = devices if on_cpu and isinstance(devices, int) and devices > 1 else 1
    return max(1, parallel_jobs) * ranks


def set_intra_op_threads(requested: int | None, processes: int) -> tuple[int, str]:
    """Set torch's intra-op threads: ``requested`` (``threads=``), else ``OMP_NUM_THREADS``'s (torch read it
    at start-up), else the usable cores divided by ``processes``. Returns the count and why, as logged."""
    if requested:
        why = "threads="
        torch.set_num_threads(int(requested))
    elif os.environ.get("OMP_NUM_THREADS"):
        why = "OMP_NUM_THREADS"
    else:
        cores = usable_cores()
        why = f"{cores} cores / {processes} cnnlab process{'es' if processes > 1 else ''} on this machine"
        torch.set_num_threads(max(1, cores // processes))
    threads = torch.get_num_threads()
    log.info("torch intra-op threads: %d (%s; threads=N sets it)", threads, why)
    return threads, why
