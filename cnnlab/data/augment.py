"""Train-time augmentation applied to whole batches on the device, with per-sample random parameters."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BatchAugment(nn.Module):
    """Flips and a random affine (rotation, shift, zoom), each drawn per sample, on float images in [0, 1].

    ``degrees`` is the maximum rotation, ``translate`` the maximum shift as a fraction of the size,
    ``zoom`` the maximum relative zoom in or out (Keras' ``zoom_range``). Flips and affine are fused
    into one matrix per sample and one bilinear ``grid_sample`` (reflection padding) per batch, about
    3x faster on CPU than kornia's op-by-op pipeline; flips alone are exact copies.
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
        self.hflip, self.vflip = hflip, vflip
        self.degrees, self.translate, self.zoom = degrees, translate, zoom

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, device = len(images), images.device
        flip_x = torch.rand(n, device=device) < self.hflip
        flip_y = torch.rand(n, device=device) < self.vflip
        if not (self.degrees or self.translate or self.zoom):
            images = torch.where(flip_x.view(-1, 1, 1, 1), images.flip(3), images) if self.hflip else images
            return torch.where(flip_y.view(-1, 1, 1, 1), images.flip(2), images) if self.vflip else images

        def uniform(bound: float) -> torch.Tensor:
            return (torch.rand(n, device=device) * 2 - 1) * bound

        angle, scale = uniform(math.radians(self.degrees)), 1 + uniform(self.zoom)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        sign_x, sign_y = 1 - 2 * flip_x.float(), 1 - 2 * flip_y.float()
        # output -> input coordinates in [-1, 1]: rotate/zoom the flipped grid, then shift (2 = full size)
        theta = torch.stack([
            torch.stack([cos * sign_x, -sin * sign_y, uniform(2 * self.translate)], 1),
            torch.stack([sin * sign_x, cos * sign_y, uniform(2 * self.translate)], 1),
        ], 1)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
