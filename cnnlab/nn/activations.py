"""Activations the studies swap into their networks, each a small ``nn.Module``.

The ``activation=`` config group (``conf/activation/<name>.yaml``, by ``_target_``) instantiates one of these
as a *factory* (``_partial_: true``); models call the factory wherever their documented "swappable"
nonlinearity sits.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ActivationFactory = Callable[[], nn.Module]


class ReLU(nn.ReLU):
    """max(0, x)."""


class HardSwish(nn.Hardswish):
    """x * relu6(x + 3) / 6: MobileNetV3's default deep activation."""


class GELU(nn.GELU):
    """x * Phi(x) (exact, erf-based)."""


class SiLU(nn.SiLU):
    """x * sigmoid(x) (Swish)."""


class LeakyReLU(nn.LeakyReLU):
    """x for x >= 0, slope * x otherwise."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__(negative_slope=negative_slope)


class ELU(nn.ELU):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha=alpha)


class HardELU(nn.Module):
    """ELU with exp(x) replaced by its cheap approximation 1 / (1 - x) (S0):
    x for x > 0, alpha * x / (1 - x) for x <= 0."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negative = torch.clamp(x, max=0.0)
        return torch.where(x > 0, x, self.alpha * negative / (1.0 - negative))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class LReLU(nn.Module):
    """Two-slope linear unit of S3: alpha * x for x <= 0, beta * x for x > 0."""

    def __init__(self, alpha: float = 0.01, beta: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, self.beta * x, self.alpha * x)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"
