"""MobileNetV3 small/large follow S0's layer tables; hybrid mode fuses Sobel + HOG as S0 describes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import cnnlab.conf
from cnnlab.models.mobilenetv3 import Bottleneck, MobileNetV3
from cnnlab.nn.blocks import ConvBlock, SqueezeExcite
from cnnlab.nn.features import HOG
from cnnlab.training.module import build_network

# S0 `_get_config`, restated here so the model is checked against the study, not against itself:
# kernel, expansion, out, SE, activation, stride
S0_SMALL = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]
S0_LARGE = [
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]
# mode -> (table, last 1x1 conv channels, pre-classifier conv channels)
S0 = {"small": (S0_SMALL, 576, 1024), "large": (S0_LARGE, 960, 1280)}
MODEL_CONFIGS = sorted((Path(cnnlab.conf.__path__[0]) / "model").glob("mobilenetv3_*.yaml"))


def conv_bn(c_in: int, c_out: int, kernel: int, groups: int = 1) -> int:
    """Conv without bias + BatchNorm (weight and bias per channel)."""
    return c_in // groups * c_out * kernel * kernel + 2 * c_out


def s0_backbone_params(mode: str, in_chans: int) -> int:
    """Stem, bottlenecks, last 1x1 conv and the 1x1 pre-classifier conv (with bias, no BN)."""
    table, last, pre = S0[mode]
    total = conv_bn(in_chans, 16, 3)
    chans = 16
    for kernel, expansion, out, se, _, _ in table:
        total += conv_bn(chans, expansion, 1) + conv_bn(expansion, expansion, kernel, groups=expansion)
        total += 2 * expansion * (expansion // 4) if se else 0  # two SE linears, no bias
        total += conv_bn(expansion, out, 1)
        chans = out
    return total + conv_bn(chans, last, 1) + pre * last + pre


def s0_params(mode: str, in_chans: int, classes: int) -> int:
    """Plain model: backbone + 1x1 classifier conv with bias."""
    return s0_backbone_params(mode, in_chans) + S0[mode][2] * classes + classes


def hybrid_params(mode: str, in_chans: int, classes: int, hog_dim: int) -> int:
    """Backbone on in_chans + 2, pre-classifier -> 256, HOG -> 256 -> 256 (S0's "sequence of dense layers":
    two is our choice), Linear(512, classes); all with bias."""
    pre = S0[mode][2]
    hog_branch = hog_dim * 256 + 256 + 256 * 256 + 256
    return s0_backbone_params(mode, in_chans + 2) + pre * 256 + 256 + hog_branch + 512 * classes + classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("mode", ["small", "large"])
@pytest.mark.parametrize("in_chans, classes", [(3, 10), (1, 7)])
def test_parameter_count_matches_s0_table(mode, in_chans, classes):
    assert n_params(MobileNetV3(classes, in_chans, mode=mode)) == s0_params(mode, in_chans, classes)


def test_known_parameter_counts():
    """The S0 arithmetic itself, for 3-channel input and EuroSAT's 10 classes."""
    assert s0_params("small", 3, 10) == 1_519_906
    assert s0_params("large", 3, 10) == 4_208_226


@pytest.mark.parametrize("mode", ["small", "large"])
def test_se_last_conv_adds_the_tables_se_after_the_last_1x1_conv(mode):
    """S0's Small table marks SE on the last 1x1 conv: an SE block over its channels (576 small, 960 large)."""
    last = S0[mode][1]
    model = MobileNetV3(10, mode=mode, se_last_conv=True)
    conv, se = model.features[-2:]
    assert isinstance(conv, ConvBlock) and conv[0].out_channels == last
    assert isinstance(se, SqueezeExcite) and (se.fc1.in_features, se.fc1.out_features) == (last, last // 4)
    assert n_params(model) == s0_params(mode, 3, 10) + 2 * last * (last // 4)
    assert not any(isinstance(m, SqueezeExcite) for m in MobileNetV3(10, mode=mode).features[-2:])
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("mode", ["small", "large"])
@pytest.mark.parametrize("size", [32, 64, 224])
def test_output_shapes(mode, size):
    model = MobileNetV3(10, mode=mode, img_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("mode", ["small", "large"])
def test_residual_exactly_where_stride_one_and_same_width(mode):
    table = S0[mode][0]
    blocks = [m for m in MobileNetV3(10, mode=mode).features if isinstance(m, Bottleneck)]
    assert len(blocks) == len(table)
    chans = 16
    for block, (kernel, _, out, _, _, stride) in zip(blocks, table):
        expected = stride == 1 and chans == out
        assert block.use_residual == expected
        # silence the projection (its BN outputs 0): a residual block then returns its input
        projection_bn = block.block[-1][1]
        nn.init.zeros_(projection_bn.weight)
        nn.init.zeros_(projection_bn.bias)
        x = torch.rand(1, chans, 8, 8)
        with torch.no_grad():
            out_x = block.eval()(x)
        assert torch.equal(out_x, x) if expected else not out_x.any()
        chans = out


@pytest.mark.parametrize("mode", ["small", "large"])
def test_hybrid_structure_and_parameter_count(mode):
    model = MobileNetV3(10, mode=mode, hybrid=True)
    stem_conv = model.features[0][0]
    assert stem_conv.in_channels == 5
    assert isinstance(model.head, nn.Linear) and (model.head.in_features, model.head.out_features) == (512, 10)
    assert n_params(model) == hybrid_params(mode, 3, 10, HOG(9, 8, 2).output_dim(64))


@pytest.mark.parametrize("img_size, in_chans", [(64, 3), (32, 1)])
def test_hybrid_forward_uses_hog_of_the_input_batch(img_size, in_chans):
    model = MobileNetV3(6, in_chans, img_size, hybrid=True).eval()
    x = torch.rand(3, in_chans, img_size, img_size)
    seen = {}
    model.hog_branch.register_forward_hook(lambda module, args, out: seen.update(hog=args[0]))
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (3, 6)
    torch.testing.assert_close(seen["hog"], HOG(9, 8, 2)(x))


def test_hybrid_trains_both_branches():
    # seeded: about one draw in ten saturates an SE gate's hard-sigmoid for all four images, zeroing its gradient
    torch.manual_seed(0)
    model = MobileNetV3(4, img_size=32, hybrid=True)
    loss = nn.functional.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_yaml_builds_plain_by_default_and_hybrid_on_request(config):
    cfg = OmegaConf.to_container(OmegaConf.load(config).net)
    mode = cfg["mode"]
    plain = build_network(cfg, None, num_classes=10, in_chans=3, img_size=32)
    assert not plain.hybrid and n_params(plain) == s0_params(mode, 3, 10)
    hybrid = build_network({**cfg, "hybrid": True}, None, num_classes=10, in_chans=3, img_size=32)
    assert n_params(hybrid) == hybrid_params(mode, 3, 10, HOG(9, 8, 2).output_dim(32))
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert hybrid.to(memory_format=torch.channels_last).eval()(x).shape == (2, 10)
