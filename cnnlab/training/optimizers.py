"""Optimizers whose update PyTorch does not offer: RMSprop as Keras computes it (``optim=keras_rmsprop``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class KerasRMSprop(Optimizer):
    """Keras' RMSprop (``keras.optimizers.RMSprop``, defaults rho 0.9, epsilon 1e-7, momentum 0, uncentered):
    ``v = alpha * v + (1 - alpha) * g**2``, step ``lr * g / sqrt(v + eps)``; with ``momentum``,
    ``m = momentum * m + step`` and the parameter moves by ``m``. Arguments carry torch's names
    (``alpha`` is Keras' ``rho``) so ``optim.lr``/``optim.eps`` overrides mean the same for every optimizer.

    ``torch.optim.RMSprop`` divides by ``sqrt(v) + eps`` instead: with eps 1e-7 that floors the denominator at
    1e-7 where Keras floors it at sqrt(1e-7) = 3.2e-4, so a gradient of 1e-4 steps over 3x further than in Keras.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, alpha: float = 0.9, eps: float = 1e-7, momentum: float = 0.0
    ) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for param, state in zip(params, states):
                if not state:
                    state["square_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    if group["momentum"]:
                        state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            square_avgs = [state["square_avg"] for state in states]
            torch._foreach_mul_(square_avgs, group["alpha"])
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - group["alpha"])
            denominators = torch._foreach_add(square_avgs, group["eps"])
            torch._foreach_sqrt_(denominators)
            if group["momentum"]:
                buffers = [state["momentum_buffer"] for state in states]
                torch._foreach_mul_(buffers, group["momentum"])
                torch._foreach_addcdiv_(buffers, grads, denominators, value=group["lr"])
                torch._foreach_sub_(params, buffers)
            else:
                torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])
        return loss
