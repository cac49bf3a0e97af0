"""Sweeps on this machine (``hydra/launcher=joblib``) that survive a killed job.

Hydra's joblib launcher runs all jobs through one ``joblib.Parallel`` call: when one worker process dies
(SIGKILL, the OOM killer), loky breaks the whole pool, the jobs running beside it die too, and the master
ends with ``TerminatedWorkerError`` before the sweep summary is written. Here each of the ``n_jobs`` slots
runs its jobs one after the other in a worker process of its own (loky, as joblib's); a worker that dies
takes only its job: that job is recorded as lost in its run dir, the slot starts a new worker, and the
sweep goes on to its summary. Jobs run in worker processes also with ``n_jobs=1``, so a killed job never
takes the master with it.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals

from cnnlab.evaluation.summary import mark_lost
from cnnlab.slurm import job_run_dir

log = logging.getLogger(__name__)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run the sweep's jobs, ``n_jobs`` at once, and return one JobReturn per job (a lost job returns None,
    as a failed job does in cnnlab's CLI)."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job
    from joblib import effective_n_jobs
    from joblib.externals.loky import ProcessPoolExecutor
    from joblib.externals.loky.process_executor import BrokenProcessPool

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    slots = max(1, min(effective_n_jobs(launcher.joblib.get("n_jobs") or 1), len(job_overrides)))
    log.info("Launching %d jobs, %d at a time, sweep output dir: %s", len(job_overrides), slots, sweep_dir)
    indexed = list(enumerate(job_overrides, start=initial_job_idx))
    for idx, overrides in indexed:
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
    state = Singleton.get_state()
    todo: queue.Queue = queue.Queue()
    for position, job in enumerate(indexed):
        todo.put((position, job))
    returns: list[JobReturn | None] = [None] * len(indexed)
    errors: list[BaseException] = []  # what a job raised, re-raised here as joblib.Parallel would

    def run_slot() -> None:
        """Take jobs until none is left, each in this slot's worker process; replace a worker that died."""
        executor = ProcessPoolExecutor(max_workers=1)
        try:
            while True:
                try:
                    position, (idx, overrides) = todo.get_nowait()
                except queue.Empty:
                    return
                args = (idx, overrides, launcher.hydra_context, launcher.config, launcher.task_function, state)
                try:
                    returns[position] = executor.submit(execute_job, *args).result()
                except BrokenProcessPool as error:  # loky's TerminatedWorkerError: the worker died
                    returns[position] = _lost(launcher, idx, overrides, error)
                    executor.shutdown(wait=False)
                    executor = ProcessPoolExecutor(max_workers=1)
        except BaseException as error:
            errors.append(error)
        finally:
            executor.shutdown(wait=True)

    threads = [threading.Thread(target=run_slot, name=f"sweep-slot-{n}", daemon=True) for n in range(slots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return returns  # type: ignore[return-value]


def _lost(launcher: Any, idx: int, overrides: Sequence[str], error: Exception) -> JobReturn:
    """Record job ``idx``, whose worker process died, as lost in its run dir; its JobReturn returns None."""
    run_dir = job_run_dir(launcher, idx, overrides)
    exit_codes = [line for line in str(error).splitlines() if "exit codes" in line]  # loky's, e.g. {SIGKILL(-9)}
    reason = "its worker process died before the run finished" + "".join(f" ({line})" for line in exit_codes)
    mark_lost(run_dir, reason)
    log.error("Sweep job #%d was killed, the sweep goes on: %s", idx, run_dir)
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)
