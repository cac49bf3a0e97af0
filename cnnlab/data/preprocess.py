"""Evaluation preprocessing, rebuilt from a checkpoint's ``hparams.preprocessing``: what evaluation,
prediction and export feed a model must be exactly what its test split was fed."""

from __future__ import annotations

import torch

from cnnlab.data.base import ImageDataModule


def preprocess(images: torch.Tensor, preprocessing: dict) -> torch.Tensor:
    """uint8 (N, C, H, W) images at ``img_size`` to the float, normalized input the network was
    trained on (no augmentation)."""
    images = ImageDataModule.to_float(images)
    if preprocessing.get("mean") is None:
        return images
    mean = torch.tensor(preprocessing["mean"], device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std
