"""Sobel channels and the batched HOG agree with scipy and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.feature import hog as skimage_hog

from cnnlab.nn.features import HOG, SobelChannels


def random_image(rng: np.random.Generator, height: int, width: int, channels: int, levels: int | None) -> np.ndarray:
    """(H, W, C) image in [0, 1]; ``levels`` quantizes it so flat and diagonal gradients (bin edges) occur."""
    image = rng.random((height, width, channels))
    return np.round(image * (levels - 1)) / (levels - 1) if levels else image


def reference_hog(image: np.ndarray, orientations: int, pixels_per_cell, cells_per_block) -> np.ndarray:
    """skimage's HOG of one (H, W, C) image: channel-max gradient for C > 1, grayscale for C == 1."""
    rgb = image.shape[2] > 1
    return skimage_hog(
        image if rgb else image[..., 0],
        orientations=orientations,
        pixels_per_cell=pixels_per_cell,
        cells_per_block=cells_per_block,
        block_norm="L2-Hys",
        feature_vector=True,
        channel_axis=-1 if rgb else None,
    )


def to_batch(images: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(dtype)


# (size, channels, orientations, pixels_per_cell, cells_per_block, quantization levels, dtype)
HOG_CASES = [
    (64, 3, 9, (8, 8), (2, 2), None, torch.float64),
    (64, 1, 9, (8, 8), (2, 2), None, torch.float64),
    (32, 3, 9, (8, 8), (2, 2), 256, torch.float32),
    (32, 1, 9, (4, 4), (3, 3), 256, torch.float32),
    (64, 3, 8, (8, 8), (2, 2), 16, torch.float32),  # 45 and 90 degrees are bin edges
    (32, 3, 7, (5, 7), (3, 2), None, torch.float64),  # odd, non-square cells; 180/7 not exact
    ((40, 35), 3, 12, (6, 6), (2, 3), 8, torch.float64),  # non-square image with leftover pixels
]


@pytest.mark.parametrize("size, channels, orientations, cell, block, levels, dtype", HOG_CASES)
def test_hog_matches_skimage(size, channels, orientations, cell, block, levels, dtype):
    rng = np.random.default_rng(100 * orientations + 10 * channels + cell[0])
    height, width = (size, size) if isinstance(size, int) else size
    images = [random_image(rng, height, width, channels, levels) for _ in range(3)]
    hog = HOG(orientations, cell, block)
    batch = to_batch(images, dtype)

    features = hog(batch)

    assert features.shape == (3, hog.output_dim((height, width)))
    assert features.dtype == dtype
    for image, feature in zip(images, features):
        expected = reference_hog(
            image.astype(np.float64 if dtype == torch.float64 else np.float32), orientations, cell, block
        )
        assert feature.shape == expected.shape
        np.testing.assert_allclose(feature.numpy(), expected, atol=1e-4, rtol=0)


def test_hog_batch_equals_each_image_alone():
    rng = np.random.default_rng(0)
    batch = to_batch([random_image(rng, 64, 64, 3, 256) for _ in range(5)], torch.float32)
    hog = HOG()

    together = hog(batch)

    for i in range(len(batch)):
        torch.testing.assert_close(together[i : i + 1], hog(batch[i : i + 1]), atol=1e-7, rtol=0)


def test_hog_defaults_for_64_pixel_images():
    hog = HOG()
    assert (hog.orientations, hog.pixels_per_cell, hog.cells_per_block) == (9, (8, 8), (2, 2))
    assert hog.output_dim(64) == 7 * 7 * 2 * 2 * 9
    assert hog.output_dim(32) == 3 * 3 * 2 * 2 * 9
    assert not list(hog.parameters())


def test_hog_rejects_images_smaller_than_a_block():
    with pytest.raises(ValueError, match="too small"):
        HOG(pixels_per_cell=8, cells_per_block=3).output_dim(16)


def test_sobel_appends_scipy_sobel_of_luma():
    rng = np.random.default_rng(1)
    images = rng.random((2, 3, 32, 24))
    x = torch.from_numpy(images)

    out = SobelChannels()(x)

    assert out.shape == (2, 5, 32, 24)
    torch.testing.assert_close(out[:, :3], x)
    for image, result in zip(images, out.numpy()):
        gray = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
        np.testing.assert_allclose(result[3], ndimage.sobel(gray, axis=1, mode="nearest"), atol=1e-12)
        np.testing.assert_allclose(result[4], ndimage.sobel(gray, axis=0, mode="nearest"), atol=1e-12)


def test_sobel_on_grayscale_input_uses_the_image_itself():
    image = np.random.default_rng(2).random((1, 1, 16, 16))
    out = SobelChannels()(torch.from_numpy(image))
    assert out.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(out[0, 1].numpy(), ndimage.sobel(image[0, 0], axis=1, mode="nearest"), atol=1e-12)
    np.testing.assert_allclose(out[0, 2].numpy(), ndimage.sobel(image[0, 0], axis=0, mode="nearest"), atol=1e-12)


def test_sobel_is_fixed():
    sobel = SobelChannels()
    assert not list(sobel.parameters())
    assert "kernels" not in sobel.state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_features_follow_input_dtype_and_device(dtype):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = torch.rand(2, 3, 32, 32, dtype=dtype, device=device)
        sobel, hog = SobelChannels().to(device), HOG().to(device)
        for out in (sobel(x), hog(x)):
            assert out.dtype == dtype and out.device == x.device
