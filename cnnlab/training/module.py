"""One LightningModule for every architecture: cross-entropy, per-stage metrics, optimizer and
scheduler from config.

The module is built from *configs* (plain dicts), not from a built network, so its hyperparameters
are enough to rebuild it: ``ImageClassifier.load_from_checkpoint(path)`` needs no other argument.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningModule
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

# keys of the model config that set how the network runs, not what it is
RUNTIME_KEYS = ("channels_last", "compile", "bf16_on_cpu")


def build_network(
    model: dict, activation: dict | None, num_classes: int, in_chans: int, img_size: int
) -> nn.Module:
    """Instantiate a network from its model and activation configs."""
    net_cfg = {k: v for k, v in model.items() if k not in RUNTIME_KEYS}
    activation_factory = instantiate(activation) if activation else None
    return instantiate(
        net_cfg, num_classes=num_classes, in_chans=in_chans, img_size=img_size, activation=activation_factory
    )


class ImageClassifier(LightningModule):
    """Trains any registered network on image classification."""

    def __init__(
        self,
        model: dict,
        optimizer: dict,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 32,
        activation: dict | None = None,
        scheduler: dict | None = None,
        freeze: dict | None = None,
        class_names: list[str] | None = None,
        preprocessing: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(model, activation, num_classes, in_chans, img_size)
        self.channels_last = bool(model.get("channels_last", False))
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.freeze_policy = instantiate(freeze) if freeze and freeze.get("_target_") else None
        if self.freeze_policy is not None:
            self.freeze_policy.apply(self.net)
        self.forward_net = torch.compile(self.net) if model.get("compile") else self.net

        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # checkpointed, so a resumed run keeps its best so far

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.forward_net(images)

    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self._step(batch)
        self.train_loss(loss)
        self.train_acc(logits, labels)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_loss(loss)
        self.val_acc(logits, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.test_loss(loss)
        self.test_acc(logits, labels)
        self.test_f1(logits, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        self.log("test/f1_macro", self.test_f1, on_step=False, on_epoch=True)

    def configure_callbacks(self) -> list[Callback]:
        """The freeze policy, when it acts during training (two_stage)."""
        return [self.freeze_policy] if isinstance(self.freeze_policy, Callback) else []

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(params=self.trainable_parameters())
        scheduler_cfg = self.hparams.scheduler
        if not scheduler_cfg or not scheduler_cfg.get("_target_"):
            return optimizer
        scheduler = instantiate(scheduler_cfg)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"},
        }
