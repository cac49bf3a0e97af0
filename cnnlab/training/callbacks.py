"""Callbacks that record what results.json reports about a run."""

from __future__ import annotations

import logging
import statistics
import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnnlab.errors import CnnlabError

log = logging.getLogger(__name__)


class EpochTimer(Callback):
    """Wall time of the training part of each epoch (validation excluded)."""

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def _stop(self) -> None:
        if self._start is not None:
            self.train_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    @property
    def sec_per_epoch(self) -> float | None:
        """Median over the epochs after the first (which pays warm-up costs); the first if it is alone."""
        times = self.train_seconds[1:] or self.train_seconds
        return statistics.median(times) if times else None

    def state_dict(self) -> dict:
        return {"train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_seconds = list(state_dict.get("train_seconds", []))


class EpochSeeder(Callback):
    """Reseeds torch's global RNG at the start of every training epoch from (seed, epoch, rank), and
    checkpoints the RNG's state where it is.

    Augmentation and dropout then depend only on the epoch and the batches done in it: a run resumed from
    an end-of-epoch checkpoint reseeds as the uninterrupted run did, one resumed mid-epoch gets the RNG
    state the uninterrupted run had after the same batch."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._restored: dict | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        torch.manual_seed(self.seed * 1_000_003 + trainer.current_epoch * 1_009 + trainer.global_rank)

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()  # this process's device
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # here, after the loading and the sanity check, right before the first batch: a run resumed
        # mid-epoch gets no on_train_epoch_start
        if self._restored is not None:
            torch.set_rng_state(self._restored["torch"])
            if "cuda" in self._restored and torch.cuda.is_available():
                torch.cuda.set_rng_state(self._restored["cuda"])
        self._restored = None


class NonFiniteLossError(CnnlabError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(Callback):
    """Stops training at the first NaN/inf training loss with a message naming where it happened; the
    checkpoints written so far (``last.ckpt``: the last finished epoch) are kept."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step} (batch {batch_idx}); the learning rate ({lr:g}) may be too high: try a "
                "smaller optim.lr. The last finished epoch is kept in checkpoints/last.ckpt."
            )


class SaveOnInterrupt(Callback):
    """When Ctrl-C or SIGTERM stops fit (after the current batch: :mod:`cnnlab.training.interrupts`), saves
    ``checkpoints/interrupted.ckpt`` before Lightning exits: the run as it stood after its last finished
    batch, from which it resumes exactly (the loader skips the epoch's batches done, :class:`EpochSeeder`
    restores the RNG, the module its epoch's running metrics). Stopped in an epoch's validation, the
    resumed run validates that epoch again from its start. A forced stop (a second Ctrl-C), which may cut a
    batch in two, saves nothing, and neither does a DDP run (its checkpoint would hold global rank zero's
    random state and running metrics alone: it resumes exactly from ``last.ckpt`` only) nor a stop in the
    sanity check before training (nothing trained yet in this start)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        stopped_in_fit = isinstance(exception, SIGTERMException) and trainer.state.fn == "fit"
        if stopped_in_fit and trainer.world_size == 1 and not trainer.sanity_checking:
            if trainer.validating:
                _validation_not_done(trainer)
            path = f"{self.dirpath}/interrupted.ckpt"
            trainer.save_checkpoint(path)
            log.warning("Interrupted: saved %s", path)


def _validation_not_done(trainer: Trainer) -> None:
    """Marks the epoch's validation as started, with no batch done: Lightning then reruns it whole on
    resume. Its own record of the batches done would make it skip that many batches' worth of the run
    and lose their metrics, which are not checkpointed."""
    progress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    for tracker in (progress.total, progress.current):
        tracker.reset()
        tracker.ready = tracker.started = 1
    progress.is_last_batch = False
