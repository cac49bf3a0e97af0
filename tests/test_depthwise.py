"""DepthwiseConv2d: the Gram weight gradient equals torch's, and is taken exactly where it is meant to be."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.mobilenetv3 import MobileNetV3
from cnnlab.nn import depthwise
from cnnlab.nn.blocks import ConvBlock
from cnnlab.nn.depthwise import DepthwiseConv2d, depthwise_weight_grad, set_gram_gradient


@pytest.mark.parametrize(
    "kernel, stride, size", [(5, 1, 2), (5, 2, 4), (5, 1, 7), (5, 2, 7), (3, 1, 4), (7, 2, 8), (5, 1, 16)]
)
def test_weight_grad_matches_torch_in_float64(kernel: int, stride: int, size: int) -> None:
    torch.manual_seed(0)
    images = torch.randn(3, 6, size, size, dtype=torch.float64)
    weight = torch.randn(6, 1, kernel, kernel, dtype=torch.float64)
    out = F.conv2d(images, weight, None, stride, kernel // 2, 1, 6)
    grad_output = torch.randn_like(out)
    expected = torch.nn.grad.conv2d_weight(images, weight.shape, grad_output, stride, kernel // 2, groups=6)
    assert torch.allclose(depthwise_weight_grad(images, grad_output, kernel, stride, kernel // 2), expected, atol=1e-10)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("stride, size", [(1, 2), (2, 4), (1, 8), (2, 5)])
def test_layer_gradients_match_nn_conv2d(memory_format: torch.memory_format, stride: int, size: int) -> None:
    torch.manual_seed(0)
    layer = DepthwiseConv2d(32, 5, stride, padding=2, bias=True).to(memory_format=memory_format)
    reference = nn.Conv2d(32, 32, 5, stride, 2, groups=32, bias=True).to(memory_format=memory_format)
    reference.load_state_dict(layer.state_dict())
    images = torch.randn(16, 32, size, size).contiguous(memory_format=memory_format)
    assert layer.uses_gram_gradient(images)
    grads = []
    for module in (layer, reference):
        x = images.clone().requires_grad_()
        out = module(x)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        grads.append((out.detach(), x.grad, module.weight.grad, module.bias.grad))
    for ours, theirs in zip(*grads):
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_frozen_weight_gets_no_gradient_but_the_input_does() -> None:
    layer = DepthwiseConv2d(8, 5, padding=2)
    layer.weight.requires_grad_(False)
    images = torch.randn(2, 8, 4, 4, requires_grad=True)
    layer(images).sum().backward()
    assert layer.weight.grad is None and images.grad is not None


def test_gram_gradient_only_where_it_pays() -> None:
    small_map = torch.randn(2, 16, 4, 4)
    layer = DepthwiseConv2d(16, 5, padding=2)
    assert layer.uses_gram_gradient(small_map)
    assert not layer.uses_gram_gradient(torch.randn(2, 16, 16, 16))  # large maps: oneDNN is faster
    assert not DepthwiseConv2d(16, 3, padding=1).uses_gram_gradient(small_map)  # oneDNN has a 3x3 kernel
    assert not DepthwiseConv2d(16, 5, padding=2, gram_gradient=False).uses_gram_gradient(small_map)
    with torch.no_grad():
        assert not layer.uses_gram_gradient(small_map)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.uses_gram_gradient(small_map)
    assert not layer.uses_gram_gradient(small_map.double())
    single = small_map[0].requires_grad_()
    assert not layer.uses_gram_gradient(single)
    layer(single).sum().backward()  # an unbatched image trains through nn.Conv2d
    assert single.grad.shape == single.shape


def test_conv_block_builds_depthwise_layers_with_nn_conv2d_state_dict() -> None:
    depthwise, grouped = ConvBlock(24, 24, 5, groups=24), ConvBlock(24, 48, 3, groups=2)
    assert isinstance(depthwise[0], DepthwiseConv2d) and type(grouped[0]) is nn.Conv2d
    assert depthwise[0].weight.shape == (24, 1, 5, 5)
    plain = nn.Conv2d(24, 24, 5, 1, 2, groups=24, bias=False)
    plain.load_state_dict(depthwise[0].state_dict())  # checkpoints stay interchangeable


def test_mobilenetv3_small_trains_to_the_same_gradients_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = MobileNetV3(num_classes=5, mode="small").to(memory_format=torch.channels_last)
    images = torch.rand(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(8) % 5
    calls = []
    monkeypatch.setattr(
        depthwise, "depthwise_weight_grad", lambda *args: calls.append(args) or depthwise_weight_grad(*args)
    )
    grads, gram_calls = {}, {}
    for gram in (True, False):
        set_gram_gradient(model, gram)
        calls.clear()
        model.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        grads[gram], gram_calls[gram] = [p.grad.clone() for p in model.parameters()], len(calls)
    # 5x5 layers on maps up to 8x8: the 4 stages at 4x4 and 2x2, and the stride-2 one from 8x8
    assert gram_calls == {True: 8, False: 0}
    for ours, theirs in zip(grads[True], grads[False]):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-3)


def test_set_gram_gradient_switches_every_depthwise_layer_of_a_network() -> None:
    model = MobileNetV3(num_classes=5, mode="small")
    layers = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert len(layers) == 11 and all(layer.gram_gradient for layer in layers)  # on by default
    assert set_gram_gradient(model, False) == 11
    assert not any(
        layer.gram_gradient or layer.uses_gram_gradient(torch.randn(2, layer.in_channels, 4, 4)) for layer in layers
    )
    assert set_gram_gradient(model, True) == 11 and all(layer.gram_gradient for layer in layers)
    assert set_gram_gradient(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), False) == 0  # no depthwise layer: a no-op


def test_benchmark_script_prints_every_mobilenetv3_layer_and_marks_the_gram_ones() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "depthwise_grad.py"
    run = subprocess.run(
        [sys.executable, str(script), "--batch-size", "2"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 2 * 21  # 21 distinct depthwise layers of MobileNetV3 small and large, two memory formats
    marked = {(int(r[0]), r[1].strip(), int(r[2])) for r in rows if r[-1].strip() == "yes"}
    assert (960, "2x2", 5) in marked and (576, "2x2", 5) in marked
    assert all(kernel == 5 for _, _, kernel in marked)
    assert all(float(r[5]) > 0 and float(r[6]) > 0 for r in rows)  # both timings measured


@pytest.mark.parametrize("enabled", [True, False])
def test_model_config_switch_reaches_every_depthwise_layer(enabled):
    from cnnlab.training.module import ImageClassifier

    model = {
        "net": {"_target_": "cnnlab.models.mobilenetv3.MobileNetV3", "mode": "small"},
        "depthwise_gram_gradient": enabled,
    }
    module = ImageClassifier(model=model, optimizer={"_target_": "torch.optim.Adam", "_partial_": True}, num_classes=3)
    layers = [m for m in module.net.modules() if isinstance(m, DepthwiseConv2d)]
    assert len(layers) == 11 and all(layer.gram_gradient is enabled for layer in layers)
