"""CIFAR-10 (S2, S4) through torchvision's ``CIFAR10``: ``<root>/cifar-10-batches-py/`` pickles
(data_batch_1..5, test_batch, batches.meta), already uint8, so they load in a second with no cache."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torchvision.datasets import CIFAR10

from cnnlab.data.base import ImageDataModule, Split
from cnnlab.data.download import download_once
from cnnlab.data.errors import DataError
from cnnlab.data.images import resize_images, warn_if_upscaled
from cnnlab.data.splits import stratified_holdout


class _CIFAR10Files(CIFAR10):
    """torchvision's CIFAR10 checking that the batch files are present rather than their md5 on every
    run; the downloaded archive's md5 is still checked."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class CIFAR10DataModule(ImageDataModule):
    """The 50,000 training images less a seeded stratified ``val_fraction`` for validation; the
    10,000 test images. Resized (bilinear, antialiased) when ``img_size`` is not 32.

    ``validation`` says where validation images come from: ``holdout``, a seeded stratified ``val_fraction``
    of the training images; ``last``, the last ``val_fraction`` of them in file order, unshuffled, as Keras'
    ``model.fit(validation_split=...)`` takes them (S2's fits); ``test``, the 10,000 test images while all
    50,000 train, S2's search protocol (``validation_data=(x_test, y_test)``), where whatever selects on
    validation (early stopping, checkpoints, a search's score) selects on the test set.
    """

    def __init__(
        self, val_fraction: float = 0.2, validation: Literal["holdout", "last", "test"] = "holdout", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.val_fraction = val_fraction
        self.validation = validation

    @property
    def layout(self) -> str:
        return (
            f"{self.root / _CIFAR10Files.base_folder}/{{data_batch_1..5, test_batch, batches.meta}}  "
            f"(the unpacked {_CIFAR10Files.filename})"
        )

    def _is_present(self) -> bool:
        folder = self.root / _CIFAR10Files.base_folder
        return all((folder / name).is_file() for name, _ in [*_CIFAR10Files.train_list, *_CIFAR10Files.test_list])

    def prepare_data(self) -> None:
        if self.download:
            download_once(
                self.root,
                self._is_present,
                "CIFAR-10",
                CIFAR10.url,
                self.layout,
                lambda: _CIFAR10Files(self.root, download=True),
            )

    def load_splits(self) -> dict[str, Split]:
        try:
            train, test = _CIFAR10Files(self.root, train=True), _CIFAR10Files(self.root, train=False)
        except RuntimeError as error:
            raise DataError(
                f"CIFAR-10 is not in {self.root / _CIFAR10Files.base_folder} and data.download=false. Set "
                f"data.download=true to fetch it from {CIFAR10.url}, or place it as:\n  {self.layout}"
            ) from error
        self.class_names = list(train.classes)
        train_labels, test_labels = np.asarray(train.targets), np.asarray(test.targets)
        train_images, test_images = self._to_tensor(train.data), self._to_tensor(test.data)
        test_split = self._split(test_images, test_labels, np.arange(len(test_labels)), "test")
        if self.validation == "test":
            return {
                "train": self._split(train_images, train_labels, np.arange(len(train_labels)), "train"),
                "val": test_split,
                "test": test_split,
            }
        if self.validation == "last":
            cut = math.floor(len(train_labels) * (1.0 - self.val_fraction))  # Keras' train_validation_split
            keep, val = np.arange(cut), np.arange(cut, len(train_labels))
        else:
            keep, val = stratified_holdout(train_labels, self.val_fraction, self.seed, self.class_names)
        return {
            "train": self._split(train_images, train_labels, keep, "train"),
            "val": self._split(train_images, train_labels, val, "train"),
            "test": test_split,
        }

    def _to_tensor(self, data: np.ndarray) -> torch.Tensor:
        """(N, 32, 32, 3) uint8 to (N, 3, img_size, img_size) uint8."""
        warn_if_upscaled(data.shape[1], self.img_size, "CIFAR-10")
        return resize_images(torch.from_numpy(data).permute(0, 3, 1, 2).contiguous(), self.img_size)

    @staticmethod
    def _split(images: torch.Tensor, labels: np.ndarray, index: np.ndarray, part: str) -> Split:
        # sources name an image by its position in the concatenated batch files of its part
        sources = [f"{_CIFAR10Files.base_folder}/{part}[{i}]" for i in index]
        return Split(images, torch.from_numpy(labels[index]), sources, torch.from_numpy(index))
