"""Any local ``<root>/<Class>/*`` image tree (jpg, png, ...), e.g. S1's potato-leaf set: at its native size
or resized to ``img_size``, split 80:20 train : (val + test), optionally by k-fold, optionally expanded
offline; or with a separate test tree (``test_root``, e.g. a dataset's ``Training/`` and ``Test/``) and
optionally a separate validation tree (``val_root``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.data.base import Split
from cnnlab.data.errors import DataError
from cnnlab.data.folder import FolderDataModule
from cnnlab.data.images import ImageFiles, scan_class_folders
from cnnlab.data.splits import kfold_split, stratified_holdout, stratified_split

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
        test_root: str | None = None,
        val_root: str | None = None,
        num_folds: int | None = None,
        fold: int = 0,
        expand: int = 1,
        expand_augment: nn.Module | None = None,
        expand_before_split: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.fractions = tuple(fractions)
        self.test_root = None if test_root is None else Path(test_root)
        self.val_root = None if val_root is None else Path(val_root)
        if self.val_root is not None and self.test_root is None:
            raise DataError("data.val_root needs data.test_root too (a validation tree beside a test tree)")
        if self.test_root is not None and expand_before_split:
            raise DataError("data.expand_before_split splits one tree; it does not apply with data.test_root")
        self.num_folds = num_folds
        self.fold = fold
        self.expand = expand
        self.expand_augment = expand_augment
        self.expand_before_split = expand_before_split

    @property
    def files_root(self) -> Path:
        """The folder holding ``root`` and the test and validation trees: the splits' sources name their tree."""
        trees = [folder.absolute() for folder in (self.root, self.test_root, self.val_root) if folder is not None]
        return Path(os.path.commonpath(trees)) if len(trees) > 1 else self.root

    def scan(self) -> list[ImageFiles]:
        """The tree at ``root``, then the test and validation trees when given, labelled by ``root``'s classes."""
        layout = f"{self.root}/<Class>/<image>.jpg|png|...  (one folder per class, at least 2 classes)"
        train = scan_class_folders(self.files_root, self.root, layout)
        others = [folder for folder in (self.test_root, self.val_root) if folder is not None]
        return [train] + [
            scan_class_folders(
                self.files_root, folder, f"{folder}/<Class>/<image> with the classes of {self.root}", train.class_names
            )
            for folder in others
        ]

    def load_splits(self) -> dict[str, Split]:
        if self.test_root is not None:
            return self.given_test_splits()
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

    def given_test_splits(self) -> dict[str, Split]:
        """Test (and validation) from their own trees; without ``val_root``, validation is a stratified part
        of ``root`` in the ratio of ``fractions``' first two (with k-fold: the held-out fold)."""
        decoded = self.read_files()
        train = decoded[0]
        splits = {"test": decoded[1].whole()}
        if self.val_root is not None:
            splits["train"], splits["val"] = train.whole(), decoded[2].whole()
        elif self.num_folds:
            keep, val, rest = kfold_split(
                train.files.labels, self.num_folds, self.fold, self.fractions, self.seed, self.class_names
            )
            splits["train"], splits["val"] = train.take(keep), train.take(np.sort(np.concatenate([val, rest])))
        else:
            share = self.fractions[1] / (self.fractions[0] + self.fractions[1])
            keep, val = stratified_holdout(train.files.labels, share, self.seed, self.class_names)
            splits["train"], splits["val"] = train.take(keep), train.take(val)
        if self.expand > 1:
            splits["train"] = self.expanded(splits["train"])
        return {name: splits[name] for name in ("train", "val", "test")}

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
