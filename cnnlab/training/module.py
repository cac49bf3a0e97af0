"""One LightningModule for every architecture: cross-entropy, per-stage metrics, optimizer and
scheduler from config.

The module is built from *configs* (plain dicts), not from a built network, so its hyperparameters
are enough to rebuild it: ``ImageClassifier.load_from_checkpoint(path)`` needs no other argument.
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningModule
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassF1Score

from cnnlab.models.keras_layers import apply_keras_defaults
from cnnlab.nn.depthwise import set_gram_gradient
from cnnlab.training.loss import CrossEntropyLoss
from cnnlab.training.metrics import LossAccuracy

# a model config's switches for how its network runs, beside `net` (what it is); defaults in conf/train.yaml
RUNTIME_KEYS = ("channels_last", "compile", "bf16_on_cpu", "keras_defaults", "depthwise_gram_gradient")


def model_config(model: dict) -> dict:
    """``model`` as ``{"net": <builder config>, <runtime switches>}``. Checkpoints written before the builder's
    arguments moved under ``net`` hold them flat beside the switches; they are regrouped here."""
    if "net" in model:
        return model
    return {
        "net": {k: v for k, v in model.items() if k not in RUNTIME_KEYS},
        **{k: model[k] for k in RUNTIME_KEYS if k in model},
    }


def build_network(net: dict, activation: dict | None, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """Instantiate a network from its builder config (a model config's ``net``) and an activation config."""
    activation_factory = instantiate(activation) if activation else None
    return instantiate(
        net, num_classes=num_classes, in_chans=in_chans, img_size=img_size, activation=activation_factory
    )


def without_compiled_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the ``forward_net.*`` keys of checkpoints written when the module also held its
    network a second time (under torch.compile's name): the same tensors as ``net.*``."""
    return {key: value for key, value in state_dict.items() if not key.startswith("forward_net.")}


class ImageClassifier(LightningModule):
    """Trains any network on image classification. ``model`` is a model config: ``net`` (the builder's
    ``_target_`` and arguments) and the runtime switches ``channels_last``, ``compile``, ``bf16_on_cpu``,
    ``keras_defaults`` (:func:`cnnlab.models.keras_layers.apply_keras_defaults`), ``depthwise_gram_gradient``
    (:func:`cnnlab.nn.depthwise.set_gram_gradient`)."""

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
        loss: dict | None = None,
        class_names: list[str] | None = None,
        preprocessing: dict | None = None,
    ) -> None:
        super().__init__()
        # in checkpoints only: cnnlab.train gives the loggers the whole run config once (log_config)
        self.save_hyperparameters(logger=False)
        model = self.hparams.model = model_config(model)
        self.net = build_network(model["net"], activation, num_classes, in_chans, img_size)
        if model.get("keras_defaults"):
            apply_keras_defaults(self.net)
        set_gram_gradient(self.net, model.get("depthwise_gram_gradient", True))
        self.channels_last = bool(model.get("channels_last", False))
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.freeze_policy = instantiate(freeze) if freeze and freeze.get("_target_") else None
        if self.freeze_policy is not None:
            self.freeze_policy.apply(self.net)
        if model.get("compile"):
            self.net.compile()  # in place: one set of parameters, state-dict keys stay `net.*`
        self.criterion = (instantiate(loss) if loss and loss.get("_target_") else CrossEntropyLoss()).bind(self.net)

        self.train_metrics, self.val_metrics, self.test_metrics = LossAccuracy(), LossAccuracy(), LossAccuracy()
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # checkpointed, so a resumed run keeps its best so far
        # the last test's logits and labels in test-split order (global rank zero keeps all ranks'), for the report
        self.test_logits: torch.Tensor | None = None
        self.test_labels: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        return self.criterion(logits, labels), logits, labels

    # Steps only update their stage's metrics; each epoch computes, logs and resets them once. Logging from
    # every step cost ~0.7 ms a batch, 5% of a small CIFAR CNN's training step on a 2-core CPU; so the batch
    # loss (`train/loss_step`, learning visible within the first epoch) is logged only on the steps the
    # loggers write (every trainer.log_every_n_steps).
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self._step(batch)
        self.train_metrics.update(loss, logits, labels)
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_start(self) -> None:
        # a new epoch (not one resumed mid-way) starts from zero, also after a checkpoint saved once its
        # batches were done (last.ckpt, at validation's end), which holds that epoch's sums
        self.train_metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", self.train_metrics, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_metrics.update(*self._step(batch))

    def on_validation_epoch_end(self) -> None:
        accuracy = self._log_epoch("val", self.val_metrics, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(accuracy)
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.test_metrics.update(loss, logits, labels)
        self.test_f1.update(logits, labels)
        self._test_outputs.append((logits.detach().float(), labels.detach()))

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics)
        self.log("test/f1_macro", self.test_f1)
        logits, labels = (
            zip(*self._test_outputs)
            if self._test_outputs
            else ((torch.empty(0, 0),), (torch.empty(0, dtype=torch.long),))
        )
        self.test_logits, self.test_labels = (
            self._gather_in_order(torch.cat(logits)),
            self._gather_in_order(torch.cat(labels)),
        )
        self._test_outputs = []

    def _gather_in_order(self, values: torch.Tensor) -> torch.Tensor:
        """This process's test outputs, or under DDP every process's, in test-split order (on the CPU): a
        DistributedSampler without shuffling gives rank r the samples r, r + W, r + 2W, ... (the tail padded
        with the first ones), so stacking the ranks' outputs sample by sample restores the order."""
        if self.trainer.world_size > 1:
            gathered = self.all_gather(values)  # (W, n, ...)
            values = gathered.transpose(0, 1).reshape(-1, *values.shape[1:])
        return values.cpu()

    def _log_epoch(self, stage: str, metrics: LossAccuracy, **log_options: Any) -> torch.Tensor:
        """Log ``<stage>/loss`` and ``<stage>/acc``, reset, return the accuracy. ``compute`` has summed the
        counts over processes, so every process logs the same values (``sync_dist`` keeps Lightning quiet)."""
        loss, accuracy = metrics.compute()
        metrics.reset()
        self.log_dict({f"{stage}/loss": loss, f"{stage}/acc": accuracy}, sync_dist=True, **log_options)
        return accuracy

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # free the gradients now, not after the next forward where Lightning's zero_grad runs: the next
        # forward's activations then reuse their memory (MobileNetV3 steps ~1.5% faster on a 2-core CPU)
        optimizer.zero_grad(set_to_none=True)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        """Nothing: :meth:`optimizer_step` has freed the gradients already. Lightning's own call, before every
        backward, would walk the parameters a second time each step."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the training epoch's running sums, so that an epoch resumed mid-way logs the same means; beside the
        # state dict, not in it, so checkpoints of either kind load into either version
        checkpoint["train_metrics"] = {
            name: value.detach().cpu() for name, value in self.train_metrics.metric_state.items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = without_compiled_copy(checkpoint["state_dict"])
        for name, value in checkpoint.get("train_metrics", {}).items():
            setattr(self.train_metrics, name, value.to(getattr(self.train_metrics, name).device))

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
