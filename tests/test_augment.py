"""BatchAugment's geometry against torch's reference ops, Keras' ImageDataGenerator and torchvision's
RandomRotation, its random draws against their bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from hydra.utils import instantiate
from scipy import ndimage
from test_experiments import composed
from torchvision.transforms import InterpolationMode

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
    sign_x = torch.sign(linear[:, 0, 0] * linear[:, 1, 1] - linear[:, 0, 1] * linear[:, 1, 0]) * torch.sign(
        linear[:, 1, 1]
    )
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


def test_an_unknown_padding_mode_or_interpolation_is_refused():
    with pytest.raises(ValueError, match="padding_mode='mirror'"):
        BatchAugment(padding_mode="mirror")
    with pytest.raises(ValueError, match="interpolation='bicubic': expected one of bilinear, nearest"):
        BatchAugment(interpolation="bicubic")


def keras_transform(
    image: np.ndarray,
    theta: float,
    tx: float,
    ty: float,
    zx: float,
    zy: float,
    flip_horizontal: bool,
    flip_vertical: bool,
) -> np.ndarray:
    """Keras' ``ImageDataGenerator.apply_transform`` (keras/src/legacy/preprocessing/image.py, Keras 3.15) on a
    (C, H, W) image, defaults fill_mode="nearest", order=1: rotation @ shift @ zoom about the centre, x/y
    swapped to array axes, scipy's affine_transform per channel, then the flips. (Against Keras' own
    function on four parameter sets it differed by 0.0.)"""
    radians = np.deg2rad(theta)
    rotation = np.array([[np.cos(radians), -np.sin(radians), 0], [np.sin(radians), np.cos(radians), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    zoom = np.diag([zx, zy, 1.0])
    height, width = image.shape[1:]
    o_x, o_y = height / 2 - 0.5, width / 2 - 0.5
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    matrix = offset @ rotation @ shift @ zoom @ reset
    matrix[:, [0, 1]] = matrix[:, [1, 0]]
    matrix[[0, 1]] = matrix[[1, 0]]
    out = np.stack([ndimage.affine_transform(c, matrix[:2, :2], matrix[:2, 2], order=1, mode="nearest") for c in image])
    if flip_horizontal:
        out = out[:, :, ::-1]
    if flip_vertical:
        out = out[:, ::-1, :]
    return out


# Keras' transform parameters: theta (degrees), tx, ty (pixels), zx, zy, flip_horizontal, flip_vertical
KERAS_PARAMETERS = [
    (20, 2.0, -1.5, 0.85, 1.15, True, False),
    (-35, -3.0, 1.0, 1.2, 0.9, False, True),
    (0, 0, 0, 1.1, 0.8, True, True),
    (10, 1.0, 2.0, 1.0, 1.0, False, False),
]


def test_keras_affine_warps_as_keras_image_data_generator():
    augment = BatchAugment(padding_mode="border", keras_affine=True)
    size = 12
    images = torch.rand(len(KERAS_PARAMETERS), 3, size, size, dtype=torch.float64)
    parameters = torch.tensor(
        [
            [-1.0 if fh else 1.0, -1.0 if fv else 1.0, math.radians(theta), zx, zy, 2 * tx / size, 2 * ty / size]
            for theta, tx, ty, zx, zy, fh, fv in KERAS_PARAMETERS
        ],
        dtype=torch.float64,
    )
    ours = augment.warp(images, augment.matrices(parameters))
    for image, warped, keras_parameters in zip(images, ours, KERAS_PARAMETERS):
        expected = torch.from_numpy(keras_transform(image.numpy(), *keras_parameters).copy())
        torch.testing.assert_close(warped, expected, rtol=0, atol=1e-9)


def test_keras_affine_draws_x_and_y_zoom_independently_in_keras_range():
    torch.manual_seed(2)
    keras = BatchAugment(zoom=0.2, keras_affine=True).sample_parameters(20_000, CPU)
    zoom_x, zoom_y = keras[:, 3], keras[:, 4]
    for zoom in (zoom_x, zoom_y):  # uniform in [0.8, 1.2]: mean 1, variance 0.4^2 / 12
        assert zoom.min() >= 0.8 and zoom.max() <= 1.2
        assert zoom.mean().item() == pytest.approx(1.0, abs=0.003) and zoom.var().item() == pytest.approx(
            0.16 / 12, rel=0.03
        )
    assert abs(torch.corrcoef(torch.stack([zoom_x, zoom_y]))[0, 1].item()) < 0.03
    default = BatchAugment(zoom=0.2).sample_parameters(20_000, CPU)  # one magnification s for both axes
    assert torch.equal(default[:, 3], default[:, 4]) and (1 / default[:, 3]).max() <= 1.2 + 1e-6


def test_keras_affine_shifts_along_the_rotated_axes():
    """A quarter turn then a shift right by half the size: Keras' rotation @ shift samples below, not right."""
    parameters = torch.tensor([[1.0, 1.0, math.pi / 2, 1.0, 1.0, 1.0, 0.0]])
    keras, default = BatchAugment(keras_affine=True).matrices(parameters), BatchAugment().matrices(parameters)
    torch.testing.assert_close(keras[0, :, 2], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(default[0, :, 2], torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("angle", [30.0, -17.0, 45.0])
def test_nearest_rotation_equals_torchvision_random_rotation(angle):
    """S0's RandomRotation: torchvision's rotate with its defaults, nearest interpolation and black fill."""
    augment = BatchAugment(padding_mode="zeros", interpolation="nearest")
    images = torch.rand(1, 3, 64, 64)
    ours = augment.warp(images, augment.matrices(torch.tensor([[1.0, 1.0, math.radians(angle), 1.0, 1.0, 0.0, 0.0]])))
    assert torch.equal(ours, TF.rotate(images, angle, interpolation=InterpolationMode.NEAREST, fill=0))


@pytest.mark.parametrize(
    ("overrides", "keras_affine", "interpolation"),
    [
        (["data=cifar10", "data/augment=cifar_s2_zoom"], True, "bilinear"),
        (["data=cifar10", "data/augment=cifar_s4_zoom"], True, "bilinear"),
        (["data=eurosat"], False, "nearest"),
    ],
)
def test_presets_carry_their_study_framework(overrides, keras_affine, interpolation):
    """The Keras studies' presets (and S1's expansion, which uses cifar_s4_zoom) augment as Keras; S0's as
    torchvision."""
    augment = instantiate(composed(*overrides).data.augment)
    assert (augment.keras_affine, augment.interpolation) == (keras_affine, interpolation)
    assert instantiate(composed("data=imagefolder").data.expand_augment).keras_affine
