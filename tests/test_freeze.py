"""Freeze policies: exactly which parameters train (counting layers as Keras does, checked against Keras'
own layer lists, or as modules with parameters), frozen layers and BatchNorm statistics staying put
through Lightning training, and the two-stage switch (epoch, learning rate, resume after it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import quiet_trainer, read_results, run_dirs
from fakedata import write_cifar10
from hydra import compose, initialize_config_module
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import OmegaConf
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from cnnlab.config import validate
from cnnlab.errors import ConfigError
from cnnlab.models.cifar_cnns import CNNBaselineS2
from cnnlab.models.keras_applications import KerasApplication
from cnnlab.models.keras_layers import keras_layers
from cnnlab.models.pretrained import TimmClassifier
from cnnlab.training.freeze import TopK, TwoStage, trainable_base_params
from cnnlab.training.module import ImageClassifier

BASELINE = {"_target_": "cnnlab.models.cifar_cnns.CNNBaselineS2"}
TINY_RESNET = {"_target_": "cnnlab.models.pretrained.TimmClassifier", "name": "test_resnet", "pretrained": False}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
LAST_BLOCK = [
    "backbone.layer4.0.conv2",
    "backbone.layer4.0.bn2",
    "backbone.layer4.0.downsample.1",
    "backbone.layer4.0.downsample.2",
]  # the last 4 layers of timm's test_resnet, in order


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
        params_of("head.0", *LAST_BLOCK), "backbone.layer4.0.conv2", "backbone.layer4.0.downsample.1"
    )
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


def fit(
    module: ImageClassifier,
    max_epochs: int,
    callbacks: list[Callback],
    ckpt_path: str | None = None,
    validate: bool = False,
) -> None:
    """Fit on 8 random images; with ``validate``, a sanity check and a validation run after every epoch."""
    trainer = quiet_trainer(
        max_epochs,
        callbacks,
        limit_val_batches=1 if validate else 0,
        num_sanity_val_steps=1 if validate else 0,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(module, train_dataloaders=data(), val_dataloaders=data() if validate else None, ckpt_path=ckpt_path)


def test_frozen_weights_and_batchnorm_statistics_do_not_change():
    module = classifier({"_target_": "cnnlab.training.freeze.TopK", "trainable": 2})
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    fit(module, 1, [])
    after = module.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable_layers = ("head.", "backbone.layer4.0.downsample.")
    assert changed and all(k.startswith(trainable_layers) for k in changed), changed
    assert {
        "head.0.weight",
        "backbone.layer4.0.downsample.1.weight",
        "backbone.layer4.0.downsample.2.running_mean",
    } <= changed


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
AFTER_SWITCH = without_bias(
    params_of("head.0", *LAST_BLOCK), "backbone.layer4.0.conv2", "backbone.layer4.0.downsample.1"
)


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


class ScriptedMetric(Callback):
    """Logs ``scripted``, the current epoch's entry of ``values``, after every validation (not the sanity check)."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log("scripted", self.values[trainer.current_epoch])


@pytest.mark.parametrize("restart, stopped_epoch", [(True, 4), (False, 3)])
def test_two_stage_restarts_early_stopping_at_the_switch(restart, stopped_epoch):
    """Keras fine-tunes in a second fit, whose EarlyStopping starts afresh: with patience 2, a switch at epoch 2
    and the head-only stage's best (0.5) never beaten again, the patience counts from the switch's first
    epoch (0.9, the new best) and training stops at epoch 4; without the restart it stops at epoch 3, two
    epochs after the head-only best."""
    early_stopping = EarlyStopping(monitor="scripted", patience=2)
    policy = {**TWO_STAGE, "unfreeze_epoch": 2, "restart_early_stopping": restart}
    fit(
        classifier(policy),
        8,
        [ScriptedMetric([1.0, 0.5, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95]), early_stopping],
        validate=True,
    )
    assert early_stopping.stopped_epoch == stopped_epoch
    assert early_stopping.best_score.item() == pytest.approx(0.9 if restart else 0.5)


# --- counting layers as Keras does: checked against Keras' own layer lists (tests/reference/) ---

REFERENCE = Path(__file__).parent / "reference" / "keras_layers"
# twin -> (reference file, builder of a classifier with that backbone)
KERAS_REFERENCES = {
    "mobilenetv2_100": ("mobilenetv2_100", lambda: TimmClassifier(3, name="mobilenetv2_100", pretrained=False)),
    "resnet50": ("resnet50", lambda: TimmClassifier(3, name="resnet50", pretrained=False)),
    "tf_efficientnetv2_b0": (
        "tf_efficientnetv2_b0",
        lambda: TimmClassifier(3, name="tf_efficientnetv2_b0", pretrained=False),
    ),
    "tf_efficientnetv2_b0-in_chans1": (
        "tf_efficientnetv2_b0-in_chans1",
        lambda: TimmClassifier(3, in_chans=1, name="tf_efficientnetv2_b0", pretrained=False),
    ),
    # the Keras-exact twins (cnnlab.models.keras_applications)
    **{
        f"keras_{application}": (
            file,
            lambda application=application: KerasApplication(3, application=application, weights=None),
        )
        for application, file in [
            ("MobileNetV2", "mobilenetv2_100"),
            ("ResNet50", "resnet50"),
            ("EfficientNetV2B0", "tf_efficientnetv2_b0"),
        ]
    },
}
RESNET50_CONV_BIASES = 26_560  # Keras' ResNet50 convs have biases (53 convs); timm's have none


def keras_reference(twin_name: str) -> list[tuple[str, int]]:
    """(name, trainable parameters) of each entry of the Keras model's ``layers``; for timm's resnet50,
    without Keras' conv biases."""
    rows = json.loads((REFERENCE / f"{KERAS_REFERENCES[twin_name][0]}.json").read_text())["layers"]
    biases = (
        sum(weights.get("bias", 0) for _, cls, weights in rows if cls == "Conv2D") if twin_name == "resnet50" else 0
    )
    assert biases == (RESNET50_CONV_BIASES if twin_name == "resnet50" else 0)
    return [
        (name, sum(size for weight, size in weights.items() if not (biases and cls == "Conv2D" and weight == "bias")))
        for name, cls, weights in rows
    ]


def twin(twin_name: str) -> nn.Module:
    return KERAS_REFERENCES[twin_name][1]()


def owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


@pytest.mark.parametrize("file", sorted(KERAS_REFERENCES))
def test_keras_layer_list_is_the_keras_models_own(file):
    """Same names in the same order, the same trainable parameters per layer, every backbone parameter in one layer."""
    backbone = twin(file).backbone
    layers, reference = keras_layers(backbone), keras_reference(file)
    assert [layer.name for layer in layers] == [name for name, _ in reference]
    sizes = [
        sum(p.numel() for m in layer.modules for p in backbone.get_submodule(m).parameters(recurse=False))
        for layer in layers
    ]
    assert sizes == [size for _, size in reference]
    owners = sorted(m for layer in layers for m in layer.modules)
    assert owners == sorted(name for name, module in backbone.named_modules() if owns_parameters(module))


@pytest.mark.parametrize("file", sorted(KERAS_REFERENCES))
def test_top_k_trains_what_keras_trains_for_every_n(file):
    net, reference = twin(file), keras_reference(file)
    head = sum(p.numel() for p in net.head.parameters())
    for n in [*range(len(reference) + 1), "all"]:
        TopK(n).apply(net)  # layers=auto: Keras layers for a backbone with a Keras twin
        count = len(reference) if n == "all" else n
        expected = sum(size for _, size in reference[len(reference) - count :]) if count else 0
        assert trainable_base_params(net) == expected, n
        assert sum(p.numel() for p in net.parameters() if p.requires_grad) == expected + head, n


def composed(*overrides: str):
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


S1_GRID = ["experiment=s1_mobilenetv2_imagefolder", "freeze=top_k"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([*S1_GRID, "freeze.trainable=0"], 0),
        ([*S1_GRID, "freeze.trainable=10"], 732_480),
        ([*S1_GRID, "freeze.trainable=20"], 1_206_080),
        ([*S1_GRID, "freeze.trainable=all"], 2_223_872),
        (["experiment=s1_mobilenetv2_imagefolder"], 2_223_872),  # S1's best: every layer
        (["experiment=s3_resnet50_transfer_fruits360"], 4_096),
        (["experiment=s4_efficientnetv2_two_stage"], 1_956_880),  # stage 2
        (["experiment=s4_resnet50_transfer"], 16_950_528),  # stage 2
    ],
    ids=["s1_head", "s1_top10", "s1_top20", "s1_all", "s1", "s3", "s4_efficientnetv2", "s4_resnet50"],
)
def test_study_configs_train_as_many_base_parameters_as_keras(overrides, expected):
    """The studies' Keras numbers (REPRODUCE.md) from the experiment configs, through the module train.py builds."""
    cfg = composed(*overrides, "model.net.weights=null")
    freeze = OmegaConf.to_container(cfg.freeze, resolve=True)
    module = classifier(freeze, OmegaConf.to_container(cfg.model, resolve=True))
    policy = module.freeze_policy
    if isinstance(policy, TwoStage):
        assert trainable_base_params(module.net) == 0  # stage 1: head only
        optimizer = torch.optim.Adam(module.trainable_parameters())
        policy.finetune_function(module, policy.unfreeze_epoch, optimizer)
    assert trainable_base_params(module.net) == expected


def test_s3_trains_one_batchnorm_of_the_base():
    """S3's "last three layers" of Keras' ResNet50: conv5_block3_3_bn, conv5_block3_add, conv5_block3_out."""
    net = TimmClassifier(3, name="resnet50", pretrained=False)
    TopK(3, layers="keras").apply(net)
    assert trainable(net) == params_of("head.0", "backbone.layer4.2.bn3")
    norms = {name: m.training for name, m in net.named_modules() if isinstance(m, _BatchNorm)}
    assert [name for name, training in norms.items() if training] == ["backbone.layer4.2.bn3"]


@pytest.mark.parametrize(
    "net",
    [TimmClassifier(3, name="test_resnet", pretrained=False), CNNBaselineS2(10, img_size=32)],
    ids=["timm_without_keras_twin", "cnnlab_cnn"],
)
@pytest.mark.parametrize("policy", [TopK(3, layers="keras"), TwoStage(trainable=3, layers="keras")])
def test_keras_count_without_a_keras_twin_is_a_clear_error(net, policy):
    with pytest.raises(
        ValueError,
        match=r"^freeze.layers=keras needs a backbone with a Keras twin; .*mobilenetv2_100 "
        r"\(MobileNetV2\).*: use freeze.layers=modules",
    ):
        policy.apply(net)


def test_too_many_keras_layers_says_how_many_the_backbone_has():
    with pytest.raises(
        ValueError,
        match=r"freeze.trainable=155 is out of range: this model's backbone has 154 Keras "
        r"layers \(entries of Keras MobileNetV2's base_model.layers.*use 0\.\.154 or 'all'",
    ):
        TwoStage(trainable=155).apply(TimmClassifier(3, name="mobilenetv2_100", pretrained=False))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["experiment=s3_resnet50_transfer_fruits360", "model.net.weights=null", "freeze.trainable=176"],
            "freeze.trainable=176 is out of range: this model's backbone has 175 Keras layers",
        ),
        (["freeze=top_k", "freeze.layers=keras"], "freeze.layers=keras needs a backbone with a Keras twin"),
    ],
    ids=["out_of_range", "no_keras_twin"],
)
def test_config_validation_gives_one_line_for_freeze_mistakes(overrides, expected, tmp_path):
    """What the CLI prints as its last line (test_faults.py runs the CLI for a freeze count)."""
    with pytest.raises(ConfigError) as error:
        validate(composed(*overrides, f"paths.output_dir={tmp_path}"))
    assert expected in str(error.value) and "\n" not in str(error.value)


# --- BatchNorm modes through Lightning training (sanity check, validation between epochs) ---

MOBILENETV2 = {"_target_": "cnnlab.models.pretrained.mobilenetv2", "pretrained": False}
# Keras' top 10 layers of MobileNetV2 own these modules: block_16's depthwise and project convs, 3 BatchNorms
# (block_16_expand_BN: its expand conv stays frozen), Conv_1 and Conv_1_bn
TOP10_BATCHNORMS = {"backbone.blocks.6.0.bn1", "backbone.blocks.6.0.bn2", "backbone.blocks.6.0.bn3", "backbone.bn2"}
TOP10_MODULES = TOP10_BATCHNORMS | {"backbone.blocks.6.0.conv_dw", "backbone.blocks.6.0.conv_pwl", "backbone.conv_head"}


class ModeRecorder(Callback):
    """At each epoch's first training batch: the BatchNorm layers in training mode."""

    def __init__(self) -> None:
        self.epochs: dict[int, set[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.epochs[trainer.current_epoch] = {
                name for name, m in pl_module.net.named_modules() if isinstance(m, _BatchNorm) and m.training
            }


def module_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


@pytest.mark.parametrize("base_inference", [False, True], ids=["trainable_bn_trains", "base_training_false"])
def test_batchnorm_modes_hold_through_lightning_training(base_inference):
    """Frozen BatchNorm never updates its statistics, also in the epoch after validation (where Lightning restores
    modes); a trainable one trains gamma/beta and updates its statistics, unless ``base_inference``."""
    freeze = {
        "_target_": "cnnlab.training.freeze.TopK",
        "trainable": 10,
        "layers": "keras",
        "base_inference": base_inference,
    }
    module, recorder = classifier(freeze, MOBILENETV2), ModeRecorder()
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    fit(module, 2, [recorder], validate=True)
    after = module.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {module_of(k) for k in changed} == TOP10_MODULES | {"head.1"}
    statistics = {module_of(k) for k in changed if k.endswith((".running_mean", ".running_var"))}
    assert statistics == (set() if base_inference else TOP10_BATCHNORMS)
    assert recorder.epochs[0] == recorder.epochs[1] == (set() if base_inference else TOP10_BATCHNORMS)


def test_two_stage_run_records_its_last_stage_base_parameters(cnnlab, tmp_path):
    """S4 through the CLI, switching after one epoch: results.json has stage 2's trainable base parameters."""
    data_dir = write_cifar10(tmp_path / "data", per_batch=10, test=10)
    cnnlab(
        "experiment=s4_efficientnetv2_two_stage",
        "debug=smoke",
        "model.net.weights=null",
        "freeze.unfreeze_epoch=1",
        "trainer.max_epochs=2",
        "test=false",
        f"paths.data_dir={data_dir}",
    )
    (run,) = run_dirs(cnnlab.cwd)
    results = read_results(run)
    assert (results["status"], results["epochs_run"]) == ("completed", 2)
    assert results["trainable_params_base"] == 1_956_880
    assert results["trainable_params"] == 512 * 1280 + 512 + 512 * 10 + 10  # at the start: the head only
