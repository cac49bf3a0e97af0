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
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals

from cnnlab.evaluation.summary import mark_lost
from cnnlab.slurm import job_run_dir

log = logging.getLogger(__name__)

INTERRUPT_GRACE_SEC = 60  # for the jobs' runs to save interrupted.ckpt and record how they ended


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

    executors: list[Any] = [None] * slots
    stopping = threading.Event()  # the sweep itself was interrupted: start no more jobs

    def run_slot(slot: int) -> None:
        """Take jobs until none is left, each in this slot's worker process; replace a worker that died."""
        executor = executors[slot] = ProcessPoolExecutor(max_workers=1)
        try:
            while not stopping.is_set():
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
                    executor = executors[slot] = ProcessPoolExecutor(max_workers=1)
                except SystemExit as error:  # the job's run was stopped by a signal and recorded it in its run dir
                    log.error("Sweep job #%d was stopped (exit %s), the sweep goes on", idx, error.code)
                    returns[position] = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        except BaseException as error:
            errors.append(error)
        finally:
            executor.shutdown(wait=True)

    threads = [threading.Thread(target=run_slot, args=(n,), name=f"sweep-slot-{n}", daemon=True) for n in range(slots)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stopping.set()
        _stop(threads, executors, sweep_dir)
    if errors:
        raise errors[0]
    return returns  # type: ignore[return-value]


def _stop(threads: list[threading.Thread], executors: list[Any], sweep_dir: Path) -> None:
    """Ctrl-C: a terminal sends it to the jobs' workers too, whose runs stop and record their interruption;
    wait for them (:data:`INTERRUPT_GRACE_SEC`), end the workers still running (SIGINT sent to this process
    alone), and exit as an interrupted run does, with 128 + SIGINT and one line instead of a traceback."""
    deadline = time.monotonic() + INTERRUPT_GRACE_SEC
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for thread, executor in zip(threads, executors):
        if thread.is_alive() and executor is not None:
            executor.shutdown(wait=False, kill_workers=True)
    print(f"cnnlab: sweep interrupted by SIGINT; each job's run dir in {sweep_dir} says how it ended", file=sys.stderr)
    raise SystemExit(128 + signal.SIGINT)


def _lost(launcher: Any, idx: int, overrides: Sequence[str], error: Exception) -> JobReturn:
    """Record job ``idx``, whose worker process died, as lost in its run dir; its JobReturn returns None."""
    run_dir = job_run_dir(launcher, idx, overrides)
    exit_codes = [line for line in str(error).splitlines() if "exit codes" in line]  # loky's, e.g. {SIGKILL(-9)}
    reason = "its worker process died before the run finished" + "".join(f" ({line})" for line in exit_codes)
    mark_lost(run_dir, reason)
    log.error("Sweep job #%d was killed, the sweep goes on: %s", idx, run_dir)
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)
