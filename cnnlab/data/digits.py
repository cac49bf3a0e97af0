"""scikit-learn's handwritten digits: 1,797 real 8x8 images that ship with scikit-learn.

The embedded default dataset: it needs no download, so a bare ``cnnlab`` runs the whole pipeline
offline. Images are upscaled to ``img_size`` and repeated to 3 channels so RGB models take them as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from cnnlab.data.base import ImageDataModule, Split
from cnnlab.data.splits import stratified_split


class DigitsDataModule(ImageDataModule):
    """Digits 0-9, stratified seeded train/val/test split (``fractions``)."""

    def __init__(self, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), **kwargs) -> None:
        super().__init__(**kwargs)
        self.fractions = tuple(fractions)

    def load_splits(self) -> dict[str, Split]:
        digits = load_digits()
        self.class_names = [str(name) for name in digits.target_names]
        images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
        images = F.interpolate(images, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        labels = torch.from_numpy(digits.target).long()
        indices = stratified_split(digits.target, self.fractions, self.seed, self.class_names)
        return {
            name: Split(images, labels[idx], [f"digits[{i}]" for i in idx], torch.from_numpy(idx))
            for name, idx in zip(("train", "val", "test"), indices)
        }
