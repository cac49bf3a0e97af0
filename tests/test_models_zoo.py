"""The from-scratch models of S2/S3/S4: shapes at every dataset size, the studies' parameter counts,
where the activation goes, and MAC counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

import cnnlab.conf
from cnnlab.models.complexity import count_macs
from cnnlab.models.pretrained import without_pretrained_weights
from cnnlab.models.resnet import ResNet50
from cnnlab.nn.blocks import Residual
from cnnlab.training.module import build_network

CONF_MODEL = Path(cnnlab.conf.__path__[0]) / "model"
# model -> the nonlinearity `activation=` replaces (every one of them)
SWAPPED = {
    "cnn_baseline_s2": nn.ReLU,
    "cnn_baseline_s4": nn.ReLU,
    "cnn_improved_s4": nn.ReLU,
    "cnn_improved_s4 skip=true": nn.ReLU,
    "cnn_residual_s4": nn.ReLU,
    "alexnet_cifar": nn.ReLU,
    "resnet18_s2": nn.ReLU,
    "resnet50": nn.ReLU,
    "resnet50_v1": nn.ReLU,
    "mobilenet_v1": nn.ReLU6,
}
SLOW = {"resnet50", "resnet50_v1"}  # a ResNet-50's backward is too slow on 2 shared cores
# the keras.applications twins (transfer learning: their backbone keeps its ReLUs)
KERAS_TWINS = ["keras_efficientnetv2_b0", "keras_mobilenetv2", "keras_resnet50"]
GELU = {"_target_": "cnnlab.nn.activations.GELU", "_partial_": True}


def build(name: str, img_size: int = 32, num_classes: int = 10, activation: dict | None = None) -> nn.Module:
    """The network as the CLI builds it from conf/model/<name>.yaml, without pretrained weights; ``name`` may
    add net options after the file's name, as on the command line without ``model.net.``:
    "cnn_improved_s4 skip=true"."""
    file, *options = name.split()
    net_cfg = without_pretrained_weights(OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{file}.yaml").net))
    net_cfg.update(OmegaConf.to_container(OmegaConf.from_dotlist(options)))
    return build_network(net_cfg, activation, num_classes, 3, img_size)


def count(net: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def num_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def keras_param_count(net: nn.Module) -> int:
    """What Keras' model.summary() calls total parameters: ours plus BN moving mean and variance."""
    return num_params(net) + sum(
        b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var"))
    )


def test_every_model_yaml_names_its_builder_under_net():
    for path in CONF_MODEL.glob("*.yaml"):
        cfg = OmegaConf.load(path)
        assert cfg.net._target_.startswith("cnnlab.models."), path.name


@pytest.mark.parametrize("img_size", [32, 64, 100, 128])
@pytest.mark.parametrize("name", sorted(SWAPPED))
def test_output_shape_at_every_dataset_size(name: str, img_size: int):
    with torch.device("meta"):  # shapes only: no weights allocated, no arithmetic
        net = build(name, img_size, num_classes=7)
        assert net(torch.zeros(2, 3, img_size, img_size)).shape == (2, 7)
    assert isinstance(net.head, nn.Linear) and net.head.out_features == 7


@pytest.mark.parametrize("img_size", [32, 64, 100, 128])
@pytest.mark.parametrize("name", KERAS_TWINS)
def test_keras_twin_output_shape_at_every_dataset_size(name: str, img_size: int):
    with torch.device("meta"):
        net = build(name, img_size, num_classes=7)
        assert net(torch.zeros(2, 3, img_size, img_size)).shape == (2, 7)
    assert isinstance(net.head[-1], nn.Linear) and net.head[-1].out_features == 7


@pytest.mark.parametrize("name", sorted(set(SWAPPED) - SLOW))
def test_forward_and_backward_at_32(name: str):
    torch.manual_seed(0)
    net = build(name, 32, num_classes=131)
    logits = net(torch.rand(2, 3, 32, 32))
    logits.logsumexp(1).sum().backward()
    assert logits.shape == (2, 131) and torch.isfinite(logits).all()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", sorted(SLOW))
def test_resnet50_forward_at_32(name: str):
    torch.manual_seed(0)
    net = build(name, 32, num_classes=131).eval()
    with torch.no_grad():
        logits = net(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 131) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(SWAPPED))
def test_activation_replaces_every_relu_and_nothing_else(name: str):
    with torch.device("meta"):
        default = build(name)
        swapped = build(name, activation=GELU)
    relus = count(default, SWAPPED[name])
    assert relus > 0 and count(default, nn.GELU) == 0
    assert count(swapped, nn.GELU) == relus
    assert count(swapped, nn.ReLU) == count(swapped, nn.ReLU6) == 0


def test_cnn_baseline_s4_matches_table_1():
    net = build("cnn_baseline_s4")
    assert num_params(net) == 356_810
    assert [m.weight.numel() + m.bias.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))] == [
        896,
        18_496,
        73_856,
        262_272,
        1_290,
    ]


def test_cnn_improved_s4_skip_reading_adds_a_projection_shortcut_to_each_block():
    plain, skip = build("cnn_improved_s4"), build("cnn_improved_s4 skip=true")
    assert count(plain, Residual) == 0 and count(skip, Residual) == 3
    projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in [(3, 32), (32, 64), (64, 128)])  # 1x1 conv + BN
    assert num_params(plain) == 323_050 and num_params(skip) == 323_050 + projections
    shortcuts = [m.shortcut for m in skip.modules() if isinstance(m, Residual)]
    assert [[c.kernel_size for c in s.modules() if isinstance(c, nn.Conv2d)] for s in shortcuts] == [[(1, 1)]] * 3


def test_cnn_residual_s4_matches_s4_keras_count():
    assert keras_param_count(build("cnn_residual_s4")) == 1_368_778


def test_mobilenet_v1_matches_keras_trainable_count():
    # keras.applications.MobileNet(weights=None, classes=10): 3,217,226 trainable (+21,888 BN statistics)
    net = build("mobilenet_v1")
    assert num_params(net) == 3_217_226
    assert keras_param_count(net) == 3_217_226 + 21_888


def test_resnet50_is_the_standard_resnet50():
    with torch.device("meta"):
        ours = ResNet50(num_classes=1000, in_chans=3, img_size=224)
        reference = torchvision.models.resnet50()
    assert num_params(ours) == num_params(reference) == 25_557_032
    assert count(ours, nn.Conv2d) == count(reference, nn.Conv2d) == 53


def test_resnet50_v1_matches_keras_resnet50_count():
    # keras.applications.ResNet50(weights=None, classes=1000).count_params(): its 53 convs carry biases
    with torch.device("meta"):
        net = build("resnet50_v1", 224, num_classes=1000)
    assert keras_param_count(net) == 25_636_712
    assert count(net, nn.Conv2d) == 53 and all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))


def test_alexnet_dense_layers_follow_config():
    net_cfg = OmegaConf.to_container(OmegaConf.load(CONF_MODEL / "alexnet_cifar.yaml").net)
    net_cfg.update(dense1=1024, dropout1=0.3, dense2=2048, dropout2=0.6)
    with torch.device("meta"):
        net = build_network(net_cfg, None, 10, 3, 32)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4 * 4 * 256, 1024), (1024, 2048), (2048, 10)]
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.6]


def test_count_macs_matches_hand_count_and_keeps_modes():
    net = build("cnn_baseline_s4")
    conv = 30 * 30 * 32 * 27 + 13 * 13 * 64 * 288 + 4 * 4 * 128 * 576
    assert count_macs(net, 3, 32) == conv + 2048 * 128 + 128 * 10
    assert net.training
