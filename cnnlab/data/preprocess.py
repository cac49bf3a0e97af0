"""Evaluation preprocessing for image files, rebuilt from a checkpoint's ``hparams.preprocessing``.

Prediction must feed a model exactly what evaluation fed it: files decoded and resized by the
datasets' own decoder, then made float and normalized by the :class:`ImageDataModule` methods the
training run used.
"""

from __future__ import annotations

import torch

from cnnlab.data.base import ImageDataModule


class EvalPreprocessing:
    """uint8 images (as :func:`cnnlab.data.images.decode_image` makes them from files) to the float
    batch the model saw at evaluation time."""

    def __init__(self, preprocessing: dict) -> None:
        self.img_size = int(preprocessing["img_size"])
        self._data = ImageDataModule(img_size=self.img_size, mean=preprocessing.get("mean"), std=preprocessing.get("std"))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) at ``img_size`` to the normalized float batch."""
        return self._data.normalize(self._data.to_float(images))
