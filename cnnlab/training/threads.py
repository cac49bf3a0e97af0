"""torch's intra-op threads for one cnnlab process among others on the same machine.

torch starts as many OpenMP threads as the process may use cores. Two such processes on the same cores
(parallel sweep jobs, DDP ranks on CPU) run twice the threads the cores hold; OpenMP threads that wait by
spinning then take the cores from the ones working, and a run slows far more than twofold. So each process
takes its share: the cores it may run on divided by the cnnlab processes started together on this machine
(``hydra/launcher=joblib``'s jobs times the CPU ranks of ``trainer.devices``, or torchrun's
``LOCAL_WORLD_SIZE``). An explicit ``threads=N``, or ``OMP_NUM_THREADS`` in the environment, wins.

Waiting OpenMP threads spin by default, which a process that shares its cores must not do: ``cnnlab`` sets
``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep) when it starts several processes together or when the
machine is already busy at start (processes cnnlab cannot count: another user's, another tool's). On the
shared 2-core machine of benchmarks/README.md that took a 2-thread run from 8.7-15.4 s to 1.2-1.4 s an
epoch. A run alone on idle cores keeps OpenMP's default, since PASSIVE makes it 15-25% slower there. An
``OMP_WAIT_POLICY`` in the environment wins.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which cgroups and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_ranks(trainer: Any) -> int:
    """The DDP ranks one run starts on this machine's CPUs: torchrun's ``LOCAL_WORLD_SIZE``, else
    ``trainer.devices`` when it trains on CPUs (``accelerator=cpu``, or ``auto`` without a GPU)."""
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 0))
    if ranks:
        return ranks
    devices = getattr(trainer, "get", lambda key, default=None: default)("devices")
    if not isinstance(devices, int) or devices < 2:
        return 1
    accelerator = str(getattr(trainer, "get", lambda key, default=None: default)("accelerator", "auto"))
    if accelerator == "auto":
        import torch  # only here: set_openmp_wait_policy runs before torch loads OpenMP

        return 1 if torch.cuda.is_available() else devices
    return devices if accelerator == "cpu" else 1


def local_processes(parallel_jobs: int, trainer: Any) -> int:
    """cnnlab processes started together on this machine: ``parallel_jobs`` sweep jobs, each with its
    :func:`cpu_ranks`."""
    return max(1, parallel_jobs) * cpu_ranks(trainer)


def machine_is_busy(cores: int) -> bool:
    """Whether other processes already keep the cores busy: a 1-minute load average of ``cores`` or more."""
    try:
        return os.getloadavg()[0] >= cores
    except OSError:  # no load average on this system
        return False


def set_openmp_wait_policy(processes: int) -> str | None:
    """Before torch loads OpenMP: ``OMP_WAIT_POLICY=PASSIVE`` when this process shares its cores (with the
    other cnnlab processes started together, or on a busy machine); unset otherwise. Returns the policy."""
    if "OMP_WAIT_POLICY" not in os.environ and (processes > 1 or machine_is_busy(usable_cores())):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        why = "cnnlab processes started together" if processes > 1 else "the machine is busy"
        log.info("OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE: %s)", why)
    return os.environ.get("OMP_WAIT_POLICY")


def set_intra_op_threads(requested: int | None, processes: int) -> tuple[int, str]:
    """Set torch's intra-op threads: ``requested`` (``threads=``), else ``OMP_NUM_THREADS``'s (torch read it
    at start-up), else the usable cores divided by ``processes``. Returns the count and why, as logged."""
    import torch

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
