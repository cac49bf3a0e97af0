"""The numeric precision a run trains in: ``trainer.precision=auto`` picks it per device and model from
what was measured to be fastest, and the choice (with its reason) is recorded in results.json."""

from __future__ import annotations

import contextlib
import typing

import torch
from omegaconf import DictConfig

AUTO = "auto"


def valid_precisions() -> list[str]:
    """Every value ``trainer.precision`` takes: ``auto`` and Lightning's own (``32-true``, ``bf16-mixed``, ...)."""
    from lightning.fabric.connector import _PRECISION_INPUT

    values = (str(value) for literal in typing.get_args(_PRECISION_INPUT) for value in typing.get_args(literal))
    return list(dict.fromkeys([AUTO, *values]))


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 / AMX), so bf16 autocast is a speed-up."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_cuda(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` puts the run on a CUDA GPU."""
    return accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available())


def choose_precision(requested: str | int, accelerator: str, bf16_on_cpu: bool) -> tuple[str, str]:
    """``(precision, reason)`` for Lightning's ``Trainer(precision=...)``.

    An explicit ``requested`` value is kept. ``auto`` means: on a GPU, bf16 mixed precision where the GPU
    has it (else fp16 mixed); on a CPU, bf16 mixed only for models whose config sets ``bf16_on_cpu``
    (the ResNets and the 32x32 CIFAR CNNs: 1.4-3x faster there) and only if the CPU has native bf16;
    fp32 otherwise (bf16 autocast made the depthwise MobileNets and EfficientNet 1.5-3x slower).
    """
    if str(requested) != AUTO:
        return str(requested), "set by trainer.precision"
    if uses_cuda(accelerator):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", "auto: GPU with bf16"
        return "16-mixed", "auto: GPU without bf16"
    if not bf16_on_cpu:
        return "32-true", "auto: CPU, model trains fastest in fp32"
    if cpu_supports_bf16():
        return "bf16-mixed", "auto: CPU with native bf16 and a model that gains from it (bf16_on_cpu)"
    return "32-true", "auto: CPU without native bf16"


def run_precision(cfg: DictConfig) -> tuple[str, str]:
    """:func:`choose_precision` for a composed run config."""
    return choose_precision(
        cfg.trainer.precision, str(cfg.trainer.accelerator), bool(cfg.model.get("bf16_on_cpu", False))
    )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast Lightning uses for ``trainer.precision`` (``bf16-mixed``, ``16-mixed``), or none: so that
    code outside the Trainer (the benchmark's floor, the run's report, cnnlab-eval) computes as the run did."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()
