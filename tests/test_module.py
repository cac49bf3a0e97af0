"""ImageClassifier's training loop: the epoch metrics it logs and when it frees the gradients."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, TensorDataset

from cnnlab.training.module import ImageClassifier

MODEL = {"_target_": "cnnlab.models.cifar_cnns.CNNBaselineS2"}
FUSED_ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "fused": True}


def loader(count: int, batch_size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 3, 16, 16, generator=generator)
    return DataLoader(TensorDataset(images, torch.randint(0, 3, (count,), generator=generator)), batch_size=batch_size)


def classifier() -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(model=MODEL, optimizer=FUSED_ADAM, num_classes=3, in_chans=3, img_size=16)


class GradientsAtBatchEnd(Callback):
    def __init__(self) -> None:
        self.present: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.present.append(any(p.grad is not None for p in pl_module.parameters()))


def test_gradients_are_freed_right_after_each_optimizer_step_and_accumulate_between():
    every_step = GradientsAtBatchEnd()
    quiet_trainer(1, [every_step]).fit(classifier(), loader(12, 4))
    assert every_step.present == [False, False, False]

    accumulating = GradientsAtBatchEnd()
    quiet_trainer(1, [accumulating], accumulate_grad_batches=2).fit(classifier(), loader(16, 4))
    assert accumulating.present == [True, False, True, False]  # kept until the step of every second batch


class GradientOfSecondStep(Callback):
    """The weights and batch the second optimizer step starts from, and the gradient it applies."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 1:
            self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}
            self.batch = batch

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 1:
            self.grads = {name: p.grad.clone() for name, p in pl_module.named_parameters()}


def test_each_step_applies_the_gradient_of_its_own_batch_alone():
    """Lightning's zero_grad before backward is skipped; nothing of the first step's gradient may remain."""
    second = GradientOfSecondStep()
    quiet_trainer(1, [second]).fit(classifier(), loader(8, 4))
    fresh = classifier()
    fresh.load_state_dict(second.weights)
    images, labels = second.batch
    F.cross_entropy(fresh(images), labels).backward()
    for name, p in fresh.named_parameters():
        assert torch.allclose(second.grads[name], p.grad, atol=1e-6), name


def test_epoch_metrics_are_the_per_image_loss_and_accuracy_of_the_epoch():
    module, train, val = classifier(), loader(12, 5), loader(10, 4)  # uneven last batches
    run = quiet_trainer(1)
    run.validate(module, val, verbose=False)
    images, labels = (torch.cat(parts) for parts in zip(*val))
    with torch.no_grad():
        logits = module.eval()(images)
    logged = run.callback_metrics
    assert torch.allclose(logged["val/loss"], F.cross_entropy(logits, labels), atol=1e-5)
    assert logged["val/acc"] == (logits.argmax(1) == labels).float().mean()
    assert logged["val/acc_best"] == logged["val/acc"]

    run = quiet_trainer(2)
    run.fit(classifier(), train, val)
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"} <= set(run.logged_metrics)
    assert 0 <= run.logged_metrics["train/acc"] <= 1 and run.logged_metrics["train/loss"] > 0


def test_the_network_is_registered_once():
    module = classifier()
    keys = module.state_dict().keys()
    assert not [k for k in keys if k.startswith("forward_net.")]
    assert {k for k in keys if k.startswith("net.")} == {f"net.{k}" for k in module.net.state_dict()}


def test_a_checkpoint_with_the_old_forward_net_copy_still_loads(tmp_path):
    """Checkpoints written before held every network tensor twice, as net.* and forward_net.*."""
    from cnnlab.inference import load_classifier

    module = classifier()
    state = module.state_dict()
    old_style = {**state, **{k.replace("net.", "forward_net.", 1): v for k, v in state.items() if k.startswith("net.")}}
    hparams = {
        **module.hparams,
        "class_names": ["a", "b", "c"],
        "preprocessing": {"img_size": 16, "in_chans": 3, "mean": None, "std": None},
    }
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old_style, "hyper_parameters": hparams, "pytorch-lightning_version": L.__version__}, path)
    for loaded in (ImageClassifier.load_from_checkpoint(path, map_location="cpu"), load_classifier(path)):
        for key, value in state.items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_compile_true_compiles_in_place_and_trains():
    torch.manual_seed(0)
    module = ImageClassifier(
        model={"net": MODEL, "compile": True}, optimizer=FUSED_ADAM, num_classes=3, in_chans=3, img_size=16
    )
    before = {k: v.clone() for k, v in module.state_dict().items()}
    quiet_trainer(1).fit(module, loader(8, 4))
    after = module.state_dict()
    assert after.keys() == before.keys() and not [k for k in after if "_orig_mod" in k or k.startswith("forward_net.")]
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("net."))  # it trained
    assert module.net._compiled_call_impl is not None  # the forward ran compiled
