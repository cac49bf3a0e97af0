"""A test's callback, added to a run on the command line (``+callbacks.signal_at._target_=...``): sends the
run's own process a signal (SIGTERM as a scheduler would, SIGINT as Ctrl-C does) right after a chosen batch,
so a test can stop a run at an exact point. Not part of cnnlab."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class SignalAt(Callback):
    """Signal ``name`` after batch ``batch`` (0-based) of epoch ``epoch``'s training (``stage="train"``) or
    validation (``stage="val"``)."""

    def __init__(self, epoch: int, batch: int, stage: str = "train", name: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.stage, self.signal = epoch, batch, stage, signal.Signals[name]

    def _send(self, trainer: Trainer, stage: str, batch_idx: int) -> None:
        if (stage, trainer.current_epoch, batch_idx) == (self.stage, self.epoch, self.batch):
            os.kill(os.getpid(), self.signal)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self._send(trainer, "train", batch_idx)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self._send(trainer, "val", batch_idx)
