"""Run directories: names people can read (``outputs/2026-12-02/14-46-57``) that two runs started in the same
second still do not share (the second one gets ``14-46-57-2``), and a one-line refusal of a run or sweep dir
that cannot be a directory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

RESOLVER = "unique_dir"


def unique_dir(path: str) -> str:
    """``path``, else ``path-2``, ``path-3``, ...: the first that does not exist yet, created here, so that
    of two processes asking at once each gets its own (``mkdir`` succeeds for one only). The processes of
    one multi-process start (srun's tasks, torchrun's ranks) share one: rank 0's (:func:`shared_dir`)."""
    start = _multi_process_start()
    if start is None:
        return _new_dir(path)
    key, rank = start
    return shared_dir(path, key, rank)


def _multi_process_start() -> tuple[str, int] | None:
    """(What identifies this multi-process start the same way in each of its processes, this process's
    rank), or None for a process started alone. srun's tasks: SLURM's job and step ids; torchrun's ranks:
    its run id, rendezvous address and restart count."""
    env = os.environ
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    if int(tasks) > 1 and "SLURM_PROCID" in env and "SLURM_JOB_ID" in env:
        return f"slurm-{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', 'batch')}", int(env["SLURM_PROCID"])
    if int(env.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in env and "RANK" in env:
        parts = [env["TORCHELASTIC_RUN_ID"], env.get("MASTER_ADDR"), env.get("MASTER_PORT")]
        parts.append(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
        return "torchrun-" + "-".join(str(p) for p in parts), int(env["RANK"])
    return None


def shared_dir(path: str, key: str, rank: int, timeout_sec: float = 600) -> str:
    """Rank 0 creates a new run dir (as :func:`unique_dir`) and writes its name to ``.run-dir-<key>`` beside
    it; the other ranks read it from there: their own ``path`` may name another second."""
    note = Path(path).parent / f".run-dir-{key}"
    if rank == 0:
        chosen = _new_dir(path)
        tmp = note.with_suffix(".tmp")
        tmp.write_text(chosen)
        os.replace(tmp, note)
        return chosen
    deadline = time.monotonic() + timeout_sec
    while not note.is_file():
        if time.monotonic() > deadline:
            sys.exit(f"{Path(sys.argv[0]).name}: error: rank {rank} found no run dir of rank 0 in {note}")
        time.sleep(0.1)
    return note.read_text()


def _new_dir(path: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, number = Path(path), 1
    while True:
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            number += 1
            candidate = Path(f"{path}-{number}")


def register_resolver() -> None:
    """Make ``${unique_dir:...}`` available to Hydra's run and sweep dirs (conf/hydra/default.yaml). Cached
    per config, as Hydra's ``${now:...}``: every later read of the run dir gives the same directory."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, unique_dir, use_cache=True)


class RunDirCheck(Callback):
    """A Hydra callback that checks ``hydra.run.dir`` (a run) or ``hydra.sweep.dir`` (a multirun) before Hydra's
    own attempt to create it ends in a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check("hydra.run.dir", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check("hydra.sweep.dir", str(config.hydra.sweep.dir))


def _check(key: str, value: str) -> None:
    path = Path(value)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        sys.exit(
            f"{Path(sys.argv[0]).name}: error: {key}={value} cannot be created: {blocking} is a file, not a "
            f"directory. Choose another {key}=..."
        )
