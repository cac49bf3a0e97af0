"""A run stopped by SIGTERM (schedulers, ``kill``) or Ctrl-C: which signal stopped it, what the user can
resume from, and SLURM's requeued jobs: a job asks SLURM to requeue it on the time-limit signal (SIGUSR1),
knows it is being requeued, and resumes from its newest checkpoint."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Iterator

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnnlab.training.checkpoints import newest_checkpoint

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """SIGTERM outside Lightning's fit and test (while the data is prepared, the report written, ...):
    handled like Ctrl-C. A KeyboardInterrupt, so Lightning and the callbacks treat both alike."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # Inside fit and test Lightning's own handler calls this one after it has noted the signal: it then
    # stops at the end of the current batch, a cleaner point than here.
    if signal.getsignal(signum) is _raise_interrupted:
        raise Interrupted(signum)


# the signal a stop at the end of a batch was asked for with: Ctrl-C, passed on to Lightning as SIGTERM
_deferred: list[signal.Signals] = []


def _stop_after_batch(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C inside Lightning's fit or test (whose SIGTERM handler is then in place) stops the run as
    SIGTERM does, after the current batch, where its checkpoint resumes exactly; a second Ctrl-C, or one
    elsewhere, stops at once."""
    handler = signal.getsignal(signal.SIGTERM)
    if _deferred or not callable(handler) or handler is _raise_interrupted:
        raise KeyboardInterrupt
    _deferred.append(signal.Signals(signum))
    log.warning("Ctrl-C: stopping after the current batch (Ctrl-C again stops at once, without a checkpoint)")
    handler(signal.SIGTERM, frame)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While in the block, SIGTERM stops the run like Ctrl-C (Python's default: die at once, nothing
    recorded), and during Lightning's fit and test both stop it after the current batch. Only the main
    thread can set signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferred.clear()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    previous_int = signal.signal(signal.SIGINT, _stop_after_batch)
    previous_usr1 = signal.signal(signal.SIGUSR1, requeue_on_time_limit) if SLURMEnvironment.detect() else None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, previous_usr1)


def slurm_trainer_options() -> dict[str, Any]:
    """Trainer options for a run in a SLURM job: Lightning's own requeue on SIGUSR1 is off (it saves a
    mid-epoch ``hpc_ckpt_<n>.ckpt`` that does not resume exactly, and then restores and tests that file
    whenever ``ckpt_path`` is None); :func:`cnnlab.slurm.requeue_on_time_limit` requeues instead."""
    return {"plugins": [SLURMEnvironment(auto_requeue=False)]} if SLURMEnvironment.detect() else {}


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive in the block take effect at its end, through the handlers in place
    before it: for writes a stop must not cut in two. Only the main thread can set signal handlers;
    elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: received.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def stopping_signal(error: BaseException | None) -> signal.Signals | None:
    """The signal behind an exception that ended a run, or None. Lightning raises ``SIGTERMException``
    on SIGTERM and turns Ctrl-C's KeyboardInterrupt into ``sys.exit(1)``, so the chain is followed."""
    while error is not None:
        if isinstance(error, Interrupted):
            return signal.Signals(error.signum)
        if isinstance(error, SIGTERMException):
            return _deferred[0] if _deferred else signal.SIGTERM
        if isinstance(error, KeyboardInterrupt):
            return signal.SIGINT
        error = error.__context__
    return None


def interrupt_message(stopped: signal.Signals, output_dir: Path, fold_of: Path | None = None) -> str:
    """One line: what stopped the run, what was saved, and which checkpoint resumes it exactly. For a fold
    of a cross-validation (``fold_of``: the job's run dir), the command that resumes the whole job."""
    parts = [f"interrupted by {stopped.name}"]
    newest = newest_checkpoint(output_dir)
    if stopped == signal.SIGTERM and being_requeued():
        parts.append(f"SLURM requeued the job: it resumes from {newest or 'the start'} by itself")
    elif fold_of is not None:
        parts.append(
            f"rerun with ckpt_path=last hydra.run.dir={fold_of} to keep the finished folds and continue "
            f"{output_dir.name} exactly from its newest checkpoint"
        )
    elif newest is not None:
        where = "where it stopped" if newest.name == "interrupted.ckpt" else "from the last finished epoch"
        parts.append(
            f"resume exactly {where} ({newest.relative_to(output_dir)}) with ckpt_path=last hydra.run.dir={output_dir}"
        )
    return "; ".join(parts)


def requeued_checkpoint(output_dir: Path) -> str | None:
    """In a SLURM job that was requeued (``SLURM_RESTART_COUNT`` > 0: a time limit, ``scontrol requeue``,
    preemption), the checkpoint to continue from: the run dir's newest (:func:`newest_checkpoint`), from
    which the run continues exactly as if never stopped; None (start afresh) when there is none. None
    outside a requeued job: a run starts afresh unless ``ckpt_path`` says otherwise."""
    if not SLURMEnvironment.detect() or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
        return None
    newest = newest_checkpoint(output_dir)
    return str(newest) if newest is not None else None


def job_id() -> str | None:
    """This SLURM job's id (the array task's own id for a job of an array)."""
    return os.environ.get("SLURM_JOB_ID")


def requeue_on_time_limit(signum: int, frame: Any) -> None:
    """SIGUSR1 before the time limit: global rank 0 asks SLURM to requeue the job, which stops it with
    SIGTERM; the requeued job resumes from its newest checkpoint."""
    if os.environ.get("SLURM_PROCID", "0") == "0" and job_id():
        subprocess.run(["scontrol", "requeue", job_id()], check=False)


def being_requeued() -> bool:
    """Whether SLURM is requeueing this job (``scontrol requeue``, the time-limit signal, preemption): it
    then starts again by itself. SLURM counts the restart (``Restarts``) before it stops the job, while the
    job's own ``SLURM_RESTART_COUNT`` still counts the earlier ones."""
    if not job_id():
        return False
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", job_id()], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    return restarts is not None and int(restarts.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)
