"""Hand-crafted image features for S0's hybrid MobileNetV3: Sobel edge channels and HOG.

Both run batched on the input's device, so they can sit inside a model's ``forward`` and see the
same (augmented) batch as the network, without a per-image CPU loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 luma weights, as in torchvision/kornia ``rgb_to_grayscale``
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


class SobelChannels(nn.Module):
    """Append Sobel-x and Sobel-y of the grayscale image as two channels: (N, C, H, W) -> (N, C + 2, H, W).

    Grayscale is the BT.601 luma for 3 channels and the channel mean otherwise. The kernels are the
    unnormalized 3x3 Sobel pair with replicated borders (``scipy.ndimage.sobel(mode="nearest")``,
    axis 1 for x, axis 0 for y); they are a fixed buffer, not parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        sobel_x = torch.tensor(SOBEL_X)
        self.register_buffer("kernels", torch.stack([sobel_x, sobel_x.T])[:, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weights = LUMA_WEIGHTS if channels == 3 else (1.0 / channels,) * channels
        gray = (x * x.new_tensor(weights)[None, :, None, None]).sum(dim=1, keepdim=True)
        edges = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.kernels.to(x))
        return torch.cat([x, edges], dim=1)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """(rows, cols) from one size for both axes or a pair."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class HOG(nn.Module):
    """Histogram of Oriented Gradients, batched, matching ``skimage.feature.hog`` with ``block_norm="L2-Hys"``.

    Input (N, C, H, W) float images; output (N, output_dim) in skimage's ``feature_vector`` order
    (block row, block col, cell row in block, cell col in block, orientation). Reproduced details of
    skimage: central-difference gradients with zero borders; for C > 1 the gradient of the channel
    with the largest magnitude per pixel (``channel_axis=-1``); unsigned orientations in [0, 180)
    binned as edges[i] <= angle < edges[i + 1]; cell histograms are mean magnitudes (sum / cell
    area) and pixels beyond the last whole cell are ignored; L2-Hys with eps 1e-5 and clipping at 0.2.

    Gradients and channel selection use the input's precision (float32 at least), as skimage does;
    the histogram uses float64 (float32 on MPS, which lacks float64) so bin assignment near edges
    agrees with skimage. HOG has no parameters.
    """

    def __init__(
        self, orientations: int = 9, pixels_per_cell: int | Sequence[int] = 8, cells_per_block: int | Sequence[int] = 2
    ) -> None:
        super().__init__()
        self.orientations = int(orientations)
        self.pixels_per_cell = _pair(pixels_per_cell)
        self.cells_per_block = _pair(cells_per_block)

    def _grid(self, size: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """(cells per axis, blocks per axis) for an image of ``size`` (H, W) or H == W."""
        cells = tuple(s // p for s, p in zip(_pair(size), self.pixels_per_cell))
        blocks = tuple(c - b + 1 for c, b in zip(cells, self.cells_per_block))
        if min(blocks) <= 0:
            min_size = tuple(b * p for b, p in zip(self.cells_per_block, self.pixels_per_cell))
            raise ValueError(f"image of size {_pair(size)} is too small for HOG: it needs at least {min_size}")
        return cells, blocks

    def output_dim(self, img_size: int | Sequence[int]) -> int:
        """Length of the feature vector for images of ``img_size`` (H, W) or H == W."""
        _, (blocks_row, blocks_col) = self._grid(img_size)
        return blocks_row * blocks_col * self.cells_per_block[0] * self.cells_per_block[1] * self.orientations

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        g_row, g_col = self._gradients(images)
        hist = self._cell_histograms(g_row, g_col)
        return self._normalize_blocks(hist).flatten(1).to(images.dtype)

    @staticmethod
    def _gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column gradients (N, H, W) of the channel with the largest gradient magnitude."""
        x = images.to(torch.promote_types(images.dtype, torch.float32))
        g_row = F.pad(x[..., 2:, :] - x[..., :-2, :], (0, 0, 1, 1))
        g_col = F.pad(x[..., :, 2:] - x[..., :, :-2], (1, 1, 0, 0))
        strongest = torch.hypot(g_row, g_col).argmax(dim=1, keepdim=True)  # first maximum, like numpy
        return g_row.gather(1, strongest).squeeze(1), g_col.gather(1, strongest).squeeze(1)

    def _cell_histograms(self, g_row: torch.Tensor, g_col: torch.Tensor) -> torch.Tensor:
        """Magnitude-weighted orientation histograms, (N, cells_row, cells_col, orientations)."""
        dtype = torch.float32 if g_row.device.type == "mps" else torch.float64
        g_row, g_col = g_row.to(dtype), g_col.to(dtype)
        magnitude = torch.hypot(g_col, g_row)
        orientation = torch.remainder(torch.atan2(g_row, g_col) * (180 / math.pi), 180)
        edges = torch.arange(self.orientations + 1, dtype=dtype, device=g_row.device) * (180.0 / self.orientations)
        # bin i holds edges[i] <= angle < edges[i + 1]; an angle that rounds to 180 falls in none
        in_bin = (orientation[..., None] >= edges[:-1]) & (orientation[..., None] < edges[1:])
        votes = in_bin * magnitude[..., None]

        (cells_row, cells_col), _ = self._grid(g_row.shape[-2:])
        cell_row, cell_col = self.pixels_per_cell
        votes = votes[:, : cells_row * cell_row, : cells_col * cell_col]
        votes = votes.reshape(votes.shape[0], cells_row, cell_row, cells_col, cell_col, self.orientations)
        return votes.mean(dim=(2, 4))

    def _normalize_blocks(self, hist: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        """L2-Hys normalized overlapping blocks, (N, blocks_row, blocks_col, cell_row, cell_col, orientations)."""
        block_row, block_col = self.cells_per_block
        blocks = hist.unfold(1, block_row, 1).unfold(2, block_col, 1).permute(0, 1, 2, 4, 5, 3)
        blocks = blocks / torch.sqrt(blocks.square().sum(dim=(3, 4, 5), keepdim=True) + eps**2)
        blocks = blocks.clamp(max=0.2)
        return blocks / torch.sqrt(blocks.square().sum(dim=(3, 4, 5), keepdim=True) + eps**2)
