"""Train-time augmentation applied to whole batches on the device, with per-sample random parameters."""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


class BatchAugment(nn.Module):
    """Flips and a random affine (rotation, shift, zoom), each drawn per sample, on float images in [0, 1].

    ``degrees`` is the maximum rotation, ``translate`` the maximum shift as a fraction of the size,
    ``zoom`` the maximum relative zoom in or out (Keras' ``zoom_range``).
    """

    def __init__(
        self,
        hflip: float = 0.0,
        vflip: float = 0.0,
        degrees: float = 0.0,
        translate: float = 0.0,
        zoom: float = 0.0,
    ) -> None:
        super().__init__()
        ops: list[nn.Module] = []
        if hflip:
            ops.append(K.RandomHorizontalFlip(p=hflip))
        if vflip:
            ops.append(K.RandomVerticalFlip(p=vflip))
        if degrees or translate or zoom:
            ops.append(K.RandomAffine(
                degrees=degrees,
                translate=(translate, translate) if translate else None,
                scale=(1 - zoom, 1 + zoom) if zoom else None,
                padding_mode="reflection",
                p=1.0,
            ))
        self.ops = nn.Sequential(*ops)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.ops(images) if len(self.ops) else images
