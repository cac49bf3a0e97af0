"""Freeze policies for transfer learning: which layers of a network train (``freeze=`` config group).

A *layer* is a module that owns parameters itself (``module.parameters(recurse=False)`` is not empty:
a conv, a BatchNorm, a linear layer, a ViT's position embedding on its root module), listed in
registration order, which follows the forward pass in timm and cnnlab models, excluding ``net.head``.
"The last N layers" are the last N of that list; the head always trains. Unlike Keras' layer counts,
parameter-free layers (activations, pooling, padding, adds, SE multiplies) are not counted: S4's "last
50 layers" of Keras' EfficientNetV2-B0 are about its last 25 here.

Frozen BatchNorm layers are put in eval mode: they normalize with their stored (e.g. ImageNet)
statistics and do not update them, as Keras does for BN layers with ``trainable=False`` (what the
studies ran). Lightning keeps per-module train/eval modes across validation, so this holds in training.

A policy has ``apply(net)``, called once before the optimizer is built (which then only sees trainable
parameters). ``TwoStage`` is also a Lightning callback that changes the trainable set during training.
"""

from __future__ import annotations

from typing import Union

from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

Trainable = Union[int, str]  # a number of layers, or "all"


def backbone_layers(net: nn.Module) -> list[nn.Module]:
    """The layers (modules owning parameters) of ``net`` outside ``net.head``, input end first."""
    head = set(net.head.modules())
    return [m for m in net.modules() if m not in head and next(m.parameters(recurse=False), None) is not None]


def layer_count(trainable: Trainable, num_layers: int, key: str = "freeze.trainable") -> int:
    """``trainable`` as a number of layers; a clear ValueError naming ``key`` when it is out of range."""
    if trainable == "all":
        return num_layers
    if isinstance(trainable, bool) or not isinstance(trainable, int) or not 0 <= trainable <= num_layers:
        raise ValueError(
            f"{key}={trainable!r} is out of range: this model's backbone has {num_layers} layers "
            f"(modules with parameters, head excluded); use 0..{num_layers} or 'all'"
        )
    return trainable


def _set_layer(layer: nn.Module, trainable: bool, training: bool) -> None:
    for param in layer.parameters(recurse=False):
        param.requires_grad_(trainable)
    if isinstance(layer, _BatchNorm):
        layer.train(trainable and training)


def set_trainable(net: nn.Module, trainable: Trainable) -> None:
    """Train the head and the last ``trainable`` backbone layers; freeze every other layer."""
    layers = backbone_layers(net)
    first_trainable = len(layers) - layer_count(trainable, len(layers))
    for index, layer in enumerate(layers):
        _set_layer(layer, index >= first_trainable, net.training)
    for layer in net.head.modules():
        _set_layer(layer, True, net.training)


class TopK:
    """Train the head and the last ``trainable`` backbone layers: 0 is head only, "all" is everything."""

    def __init__(self, trainable: Trainable = 0) -> None:
        self.trainable = trainable

    def apply(self, net: nn.Module) -> None:
        set_trainable(net, self.trainable)


class TwoStage(BaseFinetuning):
    """S4's fine-tuning: head only for ``unfreeze_epoch`` epochs, then the last ``trainable`` layers too, at ``lr``.

    At the switch every optimizer param group is set to ``lr`` (S4 recompiled its Keras model with the new
    rate, so the head slows down too) and the newly trainable parameters join as a new group. Resuming
    works: BaseFinetuning checkpoints the param groups, and past the switch each epoch re-applies the
    trainable set, which ``apply`` reset to head only when the module was rebuilt. Schedulers that keep
    one base LR per group (cosine) do not schedule the new group; ReduceLROnPlateau does.
    """

    def __init__(self, unfreeze_epoch: int = 5, trainable: Trainable = 50, lr: float = 1e-5) -> None:
        super().__init__()
        self.unfreeze_epoch = unfreeze_epoch
        self.trainable = trainable
        self.lr = lr

    def apply(self, net: nn.Module) -> None:
        layer_count(self.trainable, len(backbone_layers(net)))  # fail at build time, not at the switch
        set_trainable(net, 0)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.apply(pl_module.net)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch < self.unfreeze_epoch:
            return
        set_trainable(pl_module.net, self.trainable)
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new = [p for p in pl_module.net.parameters() if p.requires_grad and id(p) not in known]
        if new:
            for group in optimizer.param_groups:
                group["lr"] = self.lr
            optimizer.add_param_group({"params": new, "lr": self.lr})
