"""Freeze policies: exactly which parameters train, frozen layers staying put through training, and
the two-stage switch (epoch, learning rate, resume from a checkpoint taken after it)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnlab.models.cifar_cnns import CNNBaselineS2
from cnnlab.models.pretrained import TimmClassifier
from cnnlab.training.freeze import TopK, TwoStage
from cnnlab.training.module import ImageClassifier

BASELINE = {"_target_": "cnnlab.models.cifar_cnns.CNNBaselineS2"}
TINY_RESNET = {"_target_": "cnnlab.models.pretrained.TimmClassifier", "name": "test_resnet", "pretrained": False}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
LAST_BLOCK = ["backbone.layer4.0.conv2", "backbone.layer4.0.bn2", "backbone.layer4.0.downsample.1",
              "backbone.layer4.0.downsample.2"]  # the last 4 layers of timm's test_resnet, in order


def trainable(net: nn.Module) -> set[str]:
    return {name for name, p in net.named_parameters() if p.requires_grad}


def params_of(*modules: str) -> set[str]:
    """Parameter names of Conv/Linear (weight, bias) or BatchNorm (weight, bias) modules."""
    return {f"{m}.{p}" for m in modules for p in ("weight", "bias")}


def without_bias(names: set[str], *convs: str) -> set[str]:
    return names - {f"{c}.bias" for c in convs}


def test_top_k_on_a_flatten_cnn():
    net = CNNBaselineS2(num_classes=10, img_size=32)  # layers: features.0, features.3, dense.0 | head
    expected = {
        0: params_of("head"),
        1: params_of("head", "dense.0"),
        2: params_of("head", "dense.0", "features.3"),
        3: {name for name, _ in net.named_parameters()},
        "all": {name for name, _ in net.named_parameters()},
    }
    for count, names in expected.items():
        TopK(count).apply(net)
        assert trainable(net) == names, count


def test_top_k_on_a_timm_resnet_keeps_frozen_batchnorm_in_eval():
    net = TimmClassifier(3, name="test_resnet", pretrained=False)
    TopK(2).apply(net)
    assert trainable(net) == params_of("head.0", *LAST_BLOCK[2:]) - {"backbone.layer4.0.downsample.1.bias"}
    TopK(4).apply(net)
    assert trainable(net) == without_bias(
        params_of("head.0", *LAST_BLOCK), "backbone.layer4.0.conv2", "backbone.layer4.0.downsample.1")
    modules = dict(net.named_modules())
    assert modules["backbone.layer4.0.bn2"].training and not modules["backbone.layer4.0.bn1"].training
    TopK("all").apply(net)
    assert trainable(net) == {name for name, _ in net.named_parameters()}
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("policy", [TopK(4), TwoStage(unfreeze_epoch=1, trainable=4)])
def test_too_many_layers_is_a_clear_error(policy):
    net = CNNBaselineS2(num_classes=10, img_size=32)
    with pytest.raises(ValueError, match=r"freeze.trainable=4 is out of range.*3 layers.*0\.\.3 or 'all'"):
        policy.apply(net)


def data(img_size: int = 16, classes: int = 3) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, img_size, img_size, generator=generator)
    return DataLoader(TensorDataset(images, torch.randint(0, classes, (8,), generator=generator)), batch_size=4)


def classifier(freeze: dict, model: dict = TINY_RESNET) -> ImageClassifier:
    return ImageClassifier(model=model, optimizer=ADAM, num_classes=3, in_chans=3, img_size=16, freeze=freeze)


def fit(module: ImageClassifier, max_epochs: int, callbacks: list[Callback], ckpt_path: str | None = None) -> None:
    trainer = L.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(module, train_dataloaders=data(), ckpt_path=ckpt_path)


def test_frozen_weights_and_batchnorm_statistics_do_not_change():
    module = classifier({"_target_": "cnnlab.training.freeze.TopK", "trainable": 2})
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    fit(module, 1, [])
    after = module.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable_layers = ("head.", "backbone.layer4.0.downsample.")
    assert changed and all(k.startswith(trainable_layers) for k in changed), changed
    assert {"head.0.weight", "backbone.layer4.0.downsample.1.weight", "backbone.layer4.0.downsample.2.running_mean"} <= changed


class Recorder(Callback):
    """Per epoch: trainable parameter names and the learning rate of every optimizer param group."""

    def __init__(self) -> None:
        self.epochs: dict[int, tuple[set[str], list[float]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
            self.epochs[trainer.current_epoch] = (trainable(pl_module.net), lrs)


TWO_STAGE = {"_target_": "cnnlab.training.freeze.TwoStage", "unfreeze_epoch": 1, "trainable": 4, "lr": 1e-5}
HEAD = params_of("head.0")
AFTER_SWITCH = without_bias(params_of("head.0", *LAST_BLOCK), "backbone.layer4.0.conv2", "backbone.layer4.0.downsample.1")


def test_two_stage_switches_at_the_epoch_with_the_new_lr_and_resumes(tmp_path: Path):
    recorder = Recorder()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    fit(classifier(TWO_STAGE), 2, [recorder, checkpoints])
    assert recorder.epochs[0] == (HEAD, [1e-3])
    assert recorder.epochs[1] == (AFTER_SWITCH, [1e-5, 1e-5])

    resumed, recorder = classifier(TWO_STAGE), Recorder()
    before = {k: v.clone() for k, v in torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"].items()}
    fit(resumed, 3, [recorder], ckpt_path=str(tmp_path / "last.ckpt"))
    assert recorder.epochs == {2: (AFTER_SWITCH, [1e-5, 1e-5])}
    after = resumed.state_dict()
    assert not torch.equal(before["net.backbone.layer4.0.conv2.weight"], after["net.backbone.layer4.0.conv2.weight"])
    assert torch.equal(before["net.backbone.layer4.0.conv1.weight"], after["net.backbone.layer4.0.conv1.weight"])
