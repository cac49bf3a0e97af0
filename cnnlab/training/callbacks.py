"""Callbacks that record what results.json reports about a run."""

from __future__ import annotations

import statistics
import time

from lightning.pytorch import Callback, LightningModule, Trainer


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
