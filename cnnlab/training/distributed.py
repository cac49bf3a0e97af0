"""Multi-process runs (``trainer=ddp``): one output dir per run, and results.json written by rank 0 only.

Lightning's DDP launcher starts the other local ranks by re-running this command (``sys.argv``) with
``hydra.run.dir=<HydraConfig.run.dir>`` appended. Two things break that for cnnlab: ``run.dir`` holds
``${now:...}``, which resolves to a new time in each child, and in a multirun ``sys.argv`` is the whole
sweep. :func:`pin_run_dir` makes ``run.dir`` this job's resolved output dir and ``sys.argv`` this job's
own overrides, so every rank of a job, in a single run or a sweep, shares one output dir.
"""

from __future__ import annotations

import os
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import read_write


def pin_run_dir() -> None:
    """Make the command a DDP launcher re-runs start this job again, in this job's output dir."""
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]


def is_global_zero() -> bool:
    """Whether this process is global rank 0 (or not distributed), judged from the launchers' variables,
    for results.json, which a run writes before its Trainer exists (and if building that fails); once it
    exists, ``trainer.is_global_zero`` says it."""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID")
    if rank is not None:
        return int(rank) == 0
    node_rank = os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or "0"
    return int(node_rank) == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0


def close_process_group() -> None:
    """Leave torch.distributed's process group, if this process joined one (Lightning does not): PyTorch
    asks for it before exit, and gloo's threads still running at exit can abort a rank ("terminate called
    without an active exception") after its work is done."""
    distributed = sys.modules.get("torch.distributed")  # not imported: no group, and no torch to load
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
