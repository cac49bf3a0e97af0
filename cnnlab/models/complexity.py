"""Model cost for run logs: multiply-accumulates of one forward pass, by torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(net: nn.Module, in_chans: int, img_size: int) -> int:
    """Multiply-accumulates of one ``in_chans`` x ``img_size`` x ``img_size`` image (FLOPs / 2), in eval mode."""
    param = next(net.parameters(), None)
    image = torch.zeros(1, in_chans, img_size, img_size, device=param.device if param is not None else None)
    modes = {module: module.training for module in net.modules()}  # per module: frozen BN stays in eval
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(image)
    finally:
        for module, training in modes.items():
            module.training = training
    return counter.get_total_flops() // 2
