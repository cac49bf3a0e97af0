"""Building blocks shared across architectures."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cnnlab.nn.activations import ActivationFactory
from cnnlab.nn.depthwise import DepthwiseConv2d


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBlock(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional activation, with 'same' padding for odd kernels; a depthwise
    conv (``groups`` = channels) is a :class:`DepthwiseConv2d`."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: ActivationFactory | None = None,
    ) -> None:
        padding = (kernel_size - 1) // 2
        depthwise = groups > 1 and groups == in_chans == out_chans
        conv = (
            DepthwiseConv2d(in_chans, kernel_size, stride, padding)
            if depthwise
            else nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        )
        layers: list[nn.Module] = [conv, nn.BatchNorm2d(out_chans)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: GAP, Linear(c, c/r, no bias), ReLU, Linear(c/r, c, no bias), hard-sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 4, gate: Callable[[], nn.Module] = nn.Hardsigmoid) -> None:
        super().__init__()
        hidden = channels // reduction
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(self.fc2(self.act(self.fc1(self.pool(x).flatten(1)))))
        return x * weights[:, :, None, None]


class Residual(nn.Module):
    """``activation(body(x) + shortcut(x))``: the skip connection shared by every ResNet-style block."""

    def __init__(self, body: nn.Module, shortcut: nn.Module, activation: ActivationFactory) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def basic_residual_block(
    in_chans: int, out_chans: int, activation: ActivationFactory, project: bool = False
) -> Residual:
    """Two 3x3 ConvBlocks (activation between) plus a shortcut: identity, or a 1x1 ConvBlock projection
    when the channels change or ``project`` is set (what Keras ResNets call a "conv block")."""
    body = nn.Sequential(ConvBlock(in_chans, out_chans, 3, activation=activation), ConvBlock(out_chans, out_chans, 3))
    shortcut = ConvBlock(in_chans, out_chans, 1) if project or in_chans != out_chans else nn.Identity()
    return Residual(body, shortcut, activation)


def flattened_size(features: nn.Module, in_chans: int, img_size: int) -> int:
    """Length of ``features``' flattened output for one image, to size the Dense layer after a Flatten."""
    with torch.no_grad():
        return features(torch.zeros(1, in_chans, img_size, img_size)).numel()


class FeatureClassifier(nn.Module):
    """features -> global average pooling (or none: a Keras Flatten) -> flatten -> dense -> head.

    The common shape of the from-scratch classifiers: ``dense`` holds whatever sits between the pooling
    and the final classifier ``head`` (the module freeze policies and transfer learning treat apart).
    """

    def __init__(
        self, features: nn.Module, head: nn.Module, dense: nn.Module | None = None, global_pool: bool = True
    ) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        self.dense = dense or nn.Identity()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dense(self.pool(self.features(x)).flatten(1)))
