"""The training objective (``loss=`` config group): cross-entropy, optionally with label smoothing and with
Keras-style L2 penalties on named layers."""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLoss(nn.Module):
    """Cross-entropy of logits and class labels plus ``sum(lambda * sum(W ** 2))`` over the layers named in ``l2``.

    ``l2`` maps a module name of the network (``net.named_modules()``, e.g. ``dense.1``) to its lambda. As
    Keras' ``kernel_regularizer=l2(lambda)``, the penalty is added to the loss (not decoupled weight decay),
    covers the layer's kernel (``weight``) and not its bias, and is part of every stage's loss, so the
    logged ``train/loss`` and ``val/loss`` include it as Keras' reported losses do.
    """

    def __init__(self, label_smoothing: float = 0.0, l2: dict[str, float] | None = None) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.l2 = dict(l2 or {})
        self._penalized: list[tuple[float, nn.Parameter]] = []

    def bind(self, net: nn.Module) -> CrossEntropyLoss:
        """Find the kernels of the layers named in ``l2``; a ValueError names an unknown layer and close names."""
        modules = {
            name: module
            for name, module in net.named_modules()
            if isinstance(getattr(module, "weight", None), nn.Parameter)
        }
        self._penalized = []
        for name, strength in self.l2.items():
            if name not in modules:
                close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.4)
                hint = (
                    f"; did you mean {', '.join(close)}?" if close else f"; layers with weights: {', '.join(modules)}"
                )
                raise ValueError(f"loss.l2: the network has no layer {name!r} with a weight{hint}")
            self._penalized.append((float(strength), modules[name].weight))
        return self

    def penalty(self) -> torch.Tensor | float:
        """``sum(lambda * sum(W ** 2))`` over the bound layers (0 when there are none)."""
        return sum(strength * weight.pow(2).sum() for strength, weight in self._penalized)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss + self.penalty() if self._penalized else loss
