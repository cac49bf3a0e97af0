"""Any local ``<root>/<Class>/*`` image tree (jpg, png, ...), e.g. S1's potato-leaf set: resized to
``img_size``, split 80:20 train : (val + test), optionally by k-fold, optionally expanded offline."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.data.base import Split
from cnnlab.data.errors import DataError
from cnnlab.data.folder import FolderDataModule
from cnnlab.data.images import ImageFiles, scan_class_folders
from cnnlab.data.splits import kfold_split, stratified_split

EXPAND_CHUNK = 256  # images augmented at once while expanding


class ImageFolderDataModule(FolderDataModule):
    """Stratified seeded split by ``fractions`` (train, val, test), or with ``num_folds`` the k-fold
    fold ``fold`` as training and the other fold shared by val and test in the ratio of ``fractions``.

    ``expand=k`` (S1: 4) materializes k-1 copies of each *training* image through ``expand_augment``
    before training (seeded), so validation and test never hold augmented images. ``expand_before_split``
    is S1's order instead: every image expanded first, the copies then split with the originals, so copies
    of one photo land on both sides of the split and validation and test scores are optimistic (a leak).
    """

    def __init__(
        self,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        num_folds: int | None = None,
        fold: int = 0,
        expand: int = 1,
        expand_augment: nn.Module | None = None,
        expand_before_split: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.fractions = tuple(fractions)
        self.num_folds = num_folds
        self.fold = fold
        self.expand = expand
        self.expand_augment = expand_augment
        self.expand_before_split = expand_before_split

    def scan(self) -> list[ImageFiles]:
        layout = f"{self.root}/<Class>/<image>.jpg|png|...  (one folder per class, at least 2 classes)"
        return [scan_class_folders(self.root, self.root, layout)]

    def load_splits(self) -> dict[str, Split]:
        (decoded,) = self.read_files()
        if self.expand > 1 and self.expand_before_split:
            everything = self.expanded(decoded.take(np.arange(len(decoded.files.paths))))
            indices = self.split_indices(everything.labels.numpy())
            return {name: everything.subset(index) for name, index in zip(("train", "val", "test"), indices)}
        train, val, test = self.split_indices(decoded.files.labels)
        splits = {"train": decoded.take(train), "val": decoded.take(val), "test": decoded.take(test)}
        if self.expand > 1:
            splits["train"] = self.expanded(splits["train"])
        return splits

    def split_indices(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Train, val and test indices into ``labels``."""
        if not self.num_folds:
            return stratified_split(labels, self.fractions, self.seed, self.class_names)
        return kfold_split(labels, self.num_folds, self.fold, self.fractions, self.seed, self.class_names)

    def expanded(self, split: Split) -> Split:
        """``split`` followed by ``expand - 1`` augmented copies of each of its images (seeded)."""
        if split.pixels is None:
            raise DataError("data.expand needs the decoded images in memory; drop data.in_memory=false")
        if self.expand_augment is None:
            raise DataError("data.expand needs data.expand_augment (e.g. data/augment@data.expand_augment=eurosat)")
        images, copies = split.images, []
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            for _ in range(self.expand - 1):
                copies += [
                    (self.expand_augment(self.to_float(chunk)).clamp(0, 1) * 255).round().to(torch.uint8)
                    for chunk in images.split(EXPAND_CHUNK)
                ]
        sources = split.sources + [f"{s}#copy{k}" for k in range(1, self.expand) for s in split.sources]
        return Split(torch.cat([images, *copies]), split.labels.repeat(self.expand), sources)
