"""Building blocks shared across architectures."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cnnlab.nn.activations import ActivationFactory


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBlock(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional activation, with 'same' padding for odd kernels."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: ActivationFactory | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_chans),
        ]
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
