"""Freeze policies for transfer learning: which layers of a network train (``freeze=`` config group).

The head (``net.head``) always trains; of the backbone (everything else), "the last N layers" train and
every other layer is frozen. What a layer is, is chosen by ``layers``:

- ``keras``: an entry of the Keras base model's ``layers`` list, as the Keras studies (S1, S3, S4)
  counted. The input, activations, adds, zero-paddings, poolings, dropouts, reshapes, SE multiplies,
  Rescaling and Normalization are layers without parameters, and a conv and its BatchNorm are two
  layers. Only backbones with a Keras twin have this list (cnnlab/models/keras_layers.py): the Keras-exact
  twins of cnnlab/models/keras_applications.py (``keras_*`` models) and the timm models mobilenetv2_100 =
  MobileNetV2, 154 layers; resnet50 = ResNet50, 175; tf_efficientnetv2_b0 = EfficientNetV2B0, 270; any
  other model gets one clear error.
- ``modules``: a module that owns parameters itself (``module.parameters(recurse=False)`` is not empty:
  a conv, a BatchNorm, a linear layer, a ViT's position embedding on its root module), in registration
  order, which follows the forward pass in timm and cnnlab models. Parameter-free layers do not count:
  Keras' last 50 layers of EfficientNetV2B0 are about the last 25 modules.
- ``auto`` (the default): ``keras`` for a backbone with a Keras twin, ``modules`` for any other.

Frozen BatchNorm layers run in inference mode (eval): they normalize with their stored (e.g. ImageNet)
statistics and do not update them, as Keras runs a BatchNormalization layer with ``trainable=False``;
trainable ones run in training mode. This holds through Lightning 2.6 training: Lightning does not call
``train()`` on the model when fitting starts (it only warns that modules are in eval mode) and restores
every module's own mode after validation (tests/test_freeze.py fits with validation to check).
``base_inference=True`` runs the whole backbone in inference mode, trainable layers too: what Keras does
when the base model is called as ``base_model(inputs, training=False)`` (the Keras transfer-learning
guide's idiom); S1, S3 and S4 do not say whether they did.

A policy has ``apply(net)``, called once before the optimizer is built (which then only sees trainable
parameters). ``TwoStage`` is also a Lightning callback that changes the trainable set during training.
"""

from __future__ import annotations

from typing import Literal, Union

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning, EarlyStopping
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from cnnlab.models.keras_layers import KERAS_TWINS, keras_layers, keras_twin

Trainable = Union[int, str]  # a number of layers, or "all"
LayerCount = Literal["auto", "keras", "modules"]
Layer = tuple[nn.Module, ...]  # the modules owning one layer's parameters; none for a parameter-free Keras layer


def _twin(net: nn.Module) -> str | None:
    backbone = getattr(net, "backbone", None)
    return keras_twin(backbone) if backbone is not None else None


def _resolve_count(net: nn.Module, layers: LayerCount) -> Literal["keras", "modules"]:
    """How ``net``'s layers are counted: ``auto`` resolved; a clear ValueError for ``keras`` without a Keras twin."""
    twin = _twin(net)
    if layers == "keras" and twin is None:
        known = ", ".join(f"{timm_name} ({keras_name})" for timm_name, keras_name in KERAS_TWINS.items())
        raise ValueError(
            f"freeze.layers=keras needs a backbone with a Keras twin; this model has none (Keras layer lists "
            f"exist for the keras_* models and the timm backbones {known}): use freeze.layers=modules to count "
            "modules with parameters"
        )
    if layers == "auto":
        return "keras" if twin is not None else "modules"
    return layers


def backbone_layers(net: nn.Module, layers: LayerCount = "modules") -> list[Layer]:
    """The backbone's layers under the ``layers`` count, input end first (see the module docstring)."""
    if _resolve_count(net, layers) == "keras":
        backbone = net.backbone
        return [tuple(backbone.get_submodule(m) for m in layer.modules) for layer in keras_layers(backbone)]
    head = set(net.head.modules())
    return [(m,) for m in net.modules() if m not in head and next(m.parameters(recurse=False), None) is not None]


def layer_count(net: nn.Module, trainable: Trainable, layers: LayerCount = "modules") -> int:
    """``trainable`` as a number of ``net``'s backbone layers; a clear ValueError when it is out of range."""
    return _checked_count(net, trainable, layers, len(backbone_layers(net, layers)))


def _checked_count(net: nn.Module, trainable: Trainable, layers: LayerCount, num_layers: int) -> int:
    if trainable == "all":
        return num_layers
    if isinstance(trainable, bool) or not isinstance(trainable, int) or not 0 <= trainable <= num_layers:
        if _resolve_count(net, layers) == "keras":
            what = f"Keras layers (entries of Keras {_twin(net)}'s base_model.layers, activations and adds included)"
        else:
            what = "layers (modules with parameters, head excluded)"
        raise ValueError(
            f"freeze.trainable={trainable!r} is out of range: this model's backbone has {num_layers} {what}; "
            f"use 0..{num_layers} or 'all'"
        )
    return trainable


def _set_module(module: nn.Module, trainable: bool, training: bool) -> None:
    for param in module.parameters(recurse=False):
        param.requires_grad_(trainable)
    if isinstance(module, _BatchNorm):
        module.train(trainable and training)


def set_trainable(
    net: nn.Module, trainable: Trainable, layers: LayerCount = "modules", base_inference: bool = False
) -> None:
    """Train the head and the last ``trainable`` backbone layers; freeze every other layer."""
    backbone = backbone_layers(net, layers)
    first_trainable = len(backbone) - _checked_count(net, trainable, layers, len(backbone))
    for index, layer in enumerate(backbone):
        for module in layer:
            _set_module(module, index >= first_trainable, net.training)
    head = set(net.head.modules())
    for module in head:
        _set_module(module, True, net.training)
    if base_inference:
        for module in net.modules():
            if module is not net and module not in head:
                module.eval()


def trainable_base_params(net: nn.Module) -> int:
    """The number of trainable parameters outside the head: what "trainable parameters of the base" means in Keras."""
    head = {id(p) for p in net.head.parameters()}
    return sum(p.numel() for p in net.parameters() if p.requires_grad and id(p) not in head)


class TopK:
    """Train the head and the last ``trainable`` backbone layers: 0 is head only, "all" is everything.

    ``layers`` says what a layer is (``keras``, ``modules`` or ``auto``: see the module docstring);
    ``base_inference`` runs the backbone in inference mode as Keras' ``base_model(x, training=False)``.
    """

    def __init__(self, trainable: Trainable = 0, layers: LayerCount = "auto", base_inference: bool = False) -> None:
        self.trainable = trainable
        self.layers = layers
        self.base_inference = base_inference

    def apply(self, net: nn.Module) -> None:
        set_trainable(net, self.trainable, self.layers, self.base_inference)


class TwoStage(BaseFinetuning):
    """S4's fine-tuning: head only for ``unfreeze_epoch`` epochs, then the last ``trainable`` layers too, at ``lr``.

    Layers are counted as ``layers`` says (S4: 50 Keras layers of EfficientNetV2B0 or ResNet50). At the
    switch every optimizer param group is set to ``lr`` (S4 recompiled its Keras model with the new rate,
    so the head slows down too) and the newly trainable parameters join as a new group. Resuming works:
    BaseFinetuning checkpoints the param groups, and past the switch each epoch re-applies the trainable
    set, which ``apply`` reset to head only when the module was rebuilt. Schedulers that keep one base LR
    per group (cosine) do not schedule the new group; ReduceLROnPlateau does.

    ``restart_early_stopping``: at the switch every EarlyStopping callback starts afresh (no epochs waited,
    no best value), as Keras' EarlyStopping does when the fine-tuning is a second ``model.fit`` (its
    ``on_train_begin`` resets them): the patience counts from the switch, and the head-only stage's best
    loss does not end the fine-tuning before it improves on it.
    """

    def __init__(
        self,
        unfreeze_epoch: int = 5,
        trainable: Trainable = 50,
        lr: float = 1e-5,
        layers: LayerCount = "auto",
        base_inference: bool = False,
        restart_early_stopping: bool = True,
    ) -> None:
        super().__init__()
        self.unfreeze_epoch = unfreeze_epoch
        self.trainable = trainable
        self.lr = lr
        self.layers = layers
        self.base_inference = base_inference
        self.restart_early_stopping = restart_early_stopping

    def apply(self, net: nn.Module) -> None:
        layer_count(net, self.trainable, self.layers)  # fail at build time, not at the switch
        set_trainable(net, 0, self.layers, self.base_inference)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.apply(pl_module.net)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch < self.unfreeze_epoch:
            return
        set_trainable(pl_module.net, self.trainable, self.layers, self.base_inference)
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new = [p for p in pl_module.net.parameters() if p.requires_grad and id(p) not in known]
        if new:  # the switch itself (a resumed run past it gets its param groups from the checkpoint)
            for group in optimizer.param_groups:
                group["lr"] = self.lr
            optimizer.add_param_group({"params": new, "lr": self.lr})

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        groups = [len(optimizer.param_groups) for optimizer in trainer.optimizers]
        super().on_train_epoch_start(trainer, pl_module)  # finetune_function: a new param group at the switch
        switched = [len(optimizer.param_groups) for optimizer in trainer.optimizers] != groups
        if switched and self.restart_early_stopping:
            for early_stopping in trainer.early_stopping_callbacks:
                restart_early_stopping(early_stopping)


def restart_early_stopping(early_stopping: EarlyStopping) -> None:
    """``early_stopping`` as a new one: no epochs waited, no best value yet (Keras' ``on_train_begin``)."""
    early_stopping.wait_count = 0
    early_stopping.stopped_epoch = 0
    early_stopping.best_score = torch.tensor(torch.inf if early_stopping.monitor_op == torch.lt else -torch.inf)
