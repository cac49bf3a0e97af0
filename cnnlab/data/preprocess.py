"""Evaluation preprocessing, rebuilt from a checkpoint's ``hparams.preprocessing``: what evaluation,
prediction and export feed a model must be exactly what its test split was fed."""

from __future__ import annotations

import torch

from cnnlab.data.base import ImageDataModule, normalize


def preprocess(images: torch.Tensor, preprocessing: dict) -> torch.Tensor:
    """uint8 (N, C, H, W) images at ``img_size`` to the float, normalized input the network was
    trained on (no augmentation)."""
    return normalize(ImageDataModule.to_float(images), preprocessing.get("mean"), preprocessing.get("std"))
