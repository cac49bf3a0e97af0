"""Activations the studies swap into their networks, each a small ``nn.Module``.

The ``activation=`` config group instantiates one of these as a *factory* (``_partial_: true``);
models call the factory wherever their documented "swappable" nonlinearity sits.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ActivationFactory = Callable[[], nn.Module]

ACTIVATIONS: dict[str, type[nn.Module]] = {}


def register_activation(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make an activation available by ``name``."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        ACTIVATIONS[name] = cls
        return cls

    return decorator


def get_activation(name: str, **kwargs) -> nn.Module:
    """Build the activation registered as ``name``."""
    if name not in ACTIVATIONS:
        raise KeyError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](**kwargs)


@register_activation("relu")
class ReLU(nn.ReLU):
    """max(0, x)."""


@register_activation("hardswish")
class HardSwish(nn.Hardswish):
    """x * relu6(x + 3) / 6: MobileNetV3's default deep activation."""


@register_activation("gelu")
class GELU(nn.GELU):
    """x * Phi(x) (exact, erf-based)."""


@register_activation("silu")
class SiLU(nn.SiLU):
    """x * sigmoid(x) (Swish)."""


@register_activation("leaky_relu")
class LeakyReLU(nn.LeakyReLU):
    """x for x >= 0, slope * x otherwise."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__(negative_slope=negative_slope)


@register_activation("elu")
class ELU(nn.ELU):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha=alpha)


@register_activation("hard_elu")
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


@register_activation("lrelu")
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
