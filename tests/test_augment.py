"""BatchAugment's geometry against torch's reference ops, its random draws against their bounds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.augment import BatchAugment

CPU = torch.device("cpu")


def test_warp_equals_affine_grid_and_grid_sample():
    augment = BatchAugment(hflip=0.5, vflip=0.5, degrees=30, translate=0.2, zoom=0.2, padding_mode="border")
    torch.manual_seed(0)
    images = torch.rand(16, 3, 24, 40)  # not square: x and y must not be swapped
    matrices = augment.sample_matrices(len(images), CPU)
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    expected = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(augment.warp(images, matrices), expected, atol=1e-4)


def test_warp_by_a_quarter_turn_and_a_mirror_moves_pixels_exactly():
    augment = BatchAugment()
    images = torch.rand(2, 3, 16, 16)
    quarter_turn = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]).expand(2, 2, 3)
    mirror = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    assert torch.allclose(augment.warp(images, quarter_turn), torch.rot90(images, 1, (2, 3)), atol=1e-5)
    assert torch.allclose(augment.warp(images, mirror), images.flip(3), atol=1e-5)


@pytest.mark.parametrize(("padding_mode", "edge"), [("zeros", 0.0), ("border", 1.0)])
def test_padding_mode_fills_what_a_shift_brings_in(padding_mode, edge):
    augment = BatchAugment(padding_mode=padding_mode)
    images = torch.ones(1, 1, 8, 8)
    shift_right_by_half = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])  # input x = output x - 1 (half of 2)
    shifted = augment.warp(images, shift_right_by_half)
    assert torch.allclose(shifted[..., :4], torch.full((1, 1, 8, 4), edge), atol=1e-6)
    assert torch.allclose(shifted[..., 4:], torch.ones(1, 1, 8, 4), atol=1e-6)


def test_sampled_matrices_stay_within_the_configured_bounds():
    augment = BatchAugment(hflip=0.5, vflip=0.2, degrees=20, translate=0.1, zoom=0.3)
    torch.manual_seed(1)
    matrices = augment.sample_matrices(20_000, CPU)
    linear, shift = matrices[:, :, :2], matrices[:, :, 2]
    # each matrix is rotation(angle) / scale times diag(sign_x, sign_y)
    column_norms = linear.norm(dim=1)  # (n, 2): 1 / scale for both columns
    assert torch.allclose(column_norms[:, 0], column_norms[:, 1], atol=1e-5)
    scale = 1 / column_norms[:, 0]
    assert scale.min() >= 0.7 - 1e-5 and scale.max() <= 1.3 + 1e-5 and scale.std() > 0.1
    sign_x = torch.sign(linear[:, 0, 0] * linear[:, 1, 1] - linear[:, 0, 1] * linear[:, 1, 0]) * torch.sign(linear[:, 1, 1])
    unflipped = linear / column_norms.unsqueeze(1) * torch.stack([sign_x, torch.sign(linear[:, 1, 1])], 1).unsqueeze(1)
    angle = torch.atan2(unflipped[:, 1, 0], unflipped[:, 0, 0])
    assert angle.abs().max() <= math.radians(20) + 1e-5 and angle.abs().max() > math.radians(19)
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.abs().max() > 0.19  # 0.1 of the size = 0.2 in [-1, 1]
    assert abs((sign_x < 0).float().mean().item() - 0.5) < 0.02
    assert abs((torch.sign(linear[:, 1, 1]) < 0).float().mean().item() - 0.2) < 0.02


def test_flips_alone_copy_pixels_and_leave_the_others():
    augment = BatchAugment(hflip=1.0)
    images = torch.rand(4, 3, 8, 8)
    assert torch.equal(augment(images), images.flip(3))
    assert torch.equal(BatchAugment()(images), images)


def test_an_unknown_padding_mode_is_refused():
    with pytest.raises(ValueError, match="padding_mode='mirror'"):
        BatchAugment(padding_mode="mirror")
