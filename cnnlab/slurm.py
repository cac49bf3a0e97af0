"""Sweeps on SLURM (``hydra/launcher=slurm``): submit one job per sweep job through submitit, wait for them
without waiting forever, and report every job, also those SLURM killed; and, inside a job, the signals.

The master (:func:`launch`): an sbatch error is one line; a job pending for a reason waiting cannot fix
(the request exceeds the partition) cancels the sweep with one line naming the override to change; a job
that ended without a result (cancelled, timed out, out of memory, node lost) is recorded as lost in its
run dir, and the sweep goes on to its summary. A job SLURM requeues is still pending: not finished.

A job: submitit's signal handlers are replaced by the default ones (:func:`quiet_job_signals`); what a
job does on SLURM's time-limit signal and requeues is in :mod:`cnnlab.training.interrupts`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from cnnlab.errors import CnnlabError
from cnnlab.evaluation.summary import mark_lost

log = logging.getLogger(__name__)

POLL_SEC = 5
# pending reasons no wait resolves, and the launcher override that fixes each
HOPELESS = {
    "PartitionConfig": "hydra.launcher.cpus_per_task / mem_gb / gpus_per_node / timeout_min",
    "PartitionNodeLimit": "hydra.launcher.nodes",
    "PartitionTimeLimit": "hydra.launcher.timeout_min",
    "BadConstraints": "hydra.launcher.constraint / cpus_per_task / mem_gb",
    "InvalidAccount": "hydra.launcher.account",
    "InvalidQOS": "hydra.launcher.qos",
    "PartitionDown": "hydra.launcher.partition",
    "PartitionInactive": "hydra.launcher.partition",
}
# pending reasons that may resolve, said once so the wait is not silent
WAITING = {
    "Resources": "waits for free nodes",
    "Priority": "waits behind higher-priority jobs",
    "ReqNodeNotAvail": "waits for a requested node, now unavailable",
    "JobArrayTaskLimit": "waits for an earlier job of the array (hydra.launcher.array_parallelism)",
}


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit the sweep's jobs as one SLURM array, wait for each, and return one JobReturn per job (a job
    that failed or was lost returns None, as a failed job does in cnnlab's CLI)."""
    import submitit
    from submitit.core.utils import FailedJobError

    params = dict(launcher.params)
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"))
    executor.update_parameters(**_executor_parameters(params))
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("SLURM sweep dir: %s", sweep_dir)
    indexed = list(enumerate(job_overrides, start=initial_job_idx))
    for idx, overrides in indexed:
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
    state = Singleton.get_state()
    try:
        jobs = executor.map_array(
            launcher,
            *zip(*[(list(o), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state) for idx, o in indexed]),
        )
    except FailedJobError as error:
        raise CnnlabError(f"sbatch refused the sweep: {_sbatch_error(str(error))}") from None
    _wait(jobs)
    return [_job_return(launcher, job, idx, overrides) for job, (idx, overrides) in zip(jobs, indexed)]


def _executor_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """hydra-submitit-launcher's names as submitit's: the shared ones as they are, the rest slurm_-prefixed."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    params.pop("max_num_timeout", None)  # requeues are SLURM's and Lightning's, not submitit's resubmissions
    return {key if key in shared else f"slurm_{key}": value for key, value in params.items()}


def _sbatch_error(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if "error" in line.lower() and "sbatch" in line]
    return lines[-1] if lines else message.strip().splitlines()[-1]


def _wait(jobs: list[Any]) -> None:
    """Until every job has ended: say once why a job waits; cancel the sweep on a pending reason no wait
    resolves (:data:`HOPELESS`)."""
    said: set[str] = set()
    ids = sorted({job.job_id.split("_")[0] for job in jobs})
    while True:
        jobs[0].watcher.update()  # one sacct call for all jobs
        if all(job.done() for job in jobs):
            return
        for reason in _pending_reasons(ids):
            if reason in HOPELESS:
                subprocess.run(["scancel", *ids], check=False)
                raise CnnlabError(
                    f"SLURM cannot start the sweep's jobs (pending reason {reason}: the request exceeds what the "
                    f"partition allows); they were cancelled. Change {HOPELESS[reason]} "
                    "(or hydra.launcher.partition) to fit the partition (sinfo -o '%P %c %m %l %G')"
                )
            if reason in WAITING and reason not in said:
                said.add(reason)
                log.info("SLURM job(s) %s pending (%s): it %s", ",".join(ids), reason, WAITING[reason])
        time.sleep(POLL_SEC)


def _pending_reasons(ids: list[str]) -> set[str]:
    try:
        output = subprocess.run(
            ["squeue", "-h", "-t", "PENDING", "-o", "%r", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in output.splitlines() if line.strip()}


def _job_return(launcher: Any, job: Any, idx: int, overrides: Sequence[str]) -> JobReturn:
    """The job's own JobReturn when it returned; else one returning None, and its run dir's results.json
    says what happened (a job that ended without writing its end state is ``lost``)."""
    rank_zero = job.task(0)  # a job of several tasks (DDP under srun): global rank 0 returns the run's value
    if rank_zero.paths.result_pickle.exists():
        outcome, result = rank_zero._get_outcome_and_result()
        if outcome == "success":
            return result
        log.error("SLURM job %s failed, the sweep goes on: %s", job.job_id, str(result).strip().splitlines()[-1])
    else:
        run_dir = job_run_dir(launcher, idx, overrides)
        mark_lost(run_dir, f"SLURM job {job.job_id} ended {job.state} before the run finished")
        log.error("SLURM job %s ended %s, the sweep goes on: %s", job.job_id, job.state, run_dir)
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)


def job_run_dir(launcher: Any, idx: int, overrides: Sequence[str]) -> Path:
    """The run dir of sweep job number ``idx``: ``hydra.sweep.dir/hydra.sweep.subdir`` of its config."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(config.hydra.job):
        config.hydra.job.num = idx
    return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)


def quiet_job_signals() -> None:
    """In a job: submitit's handlers log "Bypassing signal SIGCONT/SIGTERM" on every stop; the default
    actions are right here (cnnlab's run handles SIGTERM itself while it trains)."""
    for signum in (signal.SIGCONT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
