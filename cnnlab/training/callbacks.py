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
    """Reseeds torch's global RNG at the start of every training epoch from (seed, epoch, rank).

    Augmentation and dropout then depend only on the epoch, so a run resumed from an end-of-epoch
    checkpoint replays exactly what the uninterrupted run would have done."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        torch.manual_seed(self.seed * 1_000_003 + trainer.current_epoch * 1_009 + trainer.global_rank)


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
    """On Ctrl-C or SIGTERM, saves ``checkpoints/interrupted.ckpt`` (the weights at the interruption,
    usually mid-epoch) before Lightning exits."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and trainer.state.fn == "fit":
            path = f"{self.dirpath}/interrupted.ckpt"
            trainer.save_checkpoint(path)
            log.warning("Interrupted: saved %s", path)
