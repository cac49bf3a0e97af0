"""The shared base of datasets stored as image files in class folders (EuroSAT, Fruits-360, any image
folder): decoded once into a cached uint8 tensor (default), or served per image with PIL in DataLoader
workers (``data.in_memory=false``) for datasets that do not fit in memory."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnlab.data.base import ImageDataModule, Split
from cnnlab.data.cache import decode_cached
from cnnlab.data.errors import DataError
from cnnlab.data.images import FileImageDataset, ImageFiles

log = logging.getLogger(__name__)

MAX_LISTED = 20


class FolderDataModule(ImageDataModule):
    """Unreadable image files (corrupt, truncated, empty) are skipped, listed in the log and in the
    run's ``data/summary.json`` (default), or stop the run with ``strict=true``."""

    def __init__(self, in_memory: bool = True, strict: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_memory = in_memory
        self.strict = strict
        self.unreadable: dict[str, str] = {}

    def read(self, files: ImageFiles) -> tuple[torch.Tensor | None, ImageFiles]:
        """The decoded images of ``files`` (None when not in memory) and the files that were readable."""
        if not self.in_memory:
            return None, files
        images, unreadable = decode_cached(files, self.img_size)
        if unreadable:
            self._report_unreadable(unreadable)
        return images, files.subset(np.array([p not in unreadable for p in files.paths], dtype=bool))

    def _report_unreadable(self, unreadable: dict[str, str]) -> None:
        listing = "\n".join(f"  {self.root / p}: {e}" for p, e in list(unreadable.items())[:MAX_LISTED])
        more = f"\n  ... and {len(unreadable) - MAX_LISTED} more" if len(unreadable) > MAX_LISTED else ""
        if self.strict:
            raise DataError(f"{len(unreadable)} unreadable image file(s) (data.strict=true):\n{listing}{more}")
        log.warning("skipped %d unreadable image file(s):\n%s%s", len(unreadable), listing, more)
        self.unreadable.update(unreadable)

    @staticmethod
    def take(images: torch.Tensor | None, files: ImageFiles, index: np.ndarray) -> Split:
        """The split made of ``files`` (and ``images``, if decoded) at ``index``."""
        index = np.asarray(index)
        return Split(
            None if images is None else images[torch.from_numpy(index)],
            torch.from_numpy(files.labels[index]),
            [files.paths[i] for i in index],
        )

    def dataset(self, split: str) -> Dataset:
        chosen = self.splits[split]
        if chosen.images is not None:
            return super().dataset(split)
        return FileImageDataset(self.root, chosen.sources, chosen.labels, self.img_size, self.strict)

    def summary(self) -> dict:
        return {**super().summary(), "unreadable_files": self.unreadable}
