"""The shared base of datasets stored as image files in class folders (EuroSAT, Fruits-360, any image
folder): decoded once into a memory-mapped uint8 cache in the cache directory (default), decoded into
memory each run (``data.cache=false``), or served per image with PIL in DataLoader workers
(``data.in_memory=false``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnlab.data.base import ImageDataModule, Split
from cnnlab.data.cache import CacheEntry, cache_entry, decode_files, open_cache, prepare_cache
from cnnlab.data.errors import DataError
from cnnlab.data.images import GRAY_MODES, FileImageDataset, ImageFiles, sample_headers, warn_if_upscaled

log = logging.getLogger(__name__)

MAX_LISTED = 20
MIXED_SIZE = 128  # img_size for image files of mixed sizes when data.img_size is null


@dataclass
class DecodedFiles:
    """The readable files of a scanned list; file ``i`` of ``files`` is row ``rows[i]`` of ``pixels``
    (None when the images are served from files)."""

    files: ImageFiles
    pixels: torch.Tensor | None
    rows: np.ndarray

    def whole(self) -> Split:
        """The split made of every readable file."""
        return self.take(np.arange(len(self.files.paths)))

    def take(self, index: np.ndarray) -> Split:
        """The split made of the files at ``index``."""
        index = np.asarray(index)
        return Split(
            self.pixels,
            torch.from_numpy(self.files.labels[index]),
            [self.files.paths[i] for i in index],
            torch.from_numpy(self.rows[index]),
        )


class FolderDataModule(ImageDataModule):
    """Subclasses implement :meth:`scan` (the dataset's folders) and :meth:`load_splits` (from
    :meth:`read_files`).

    Unreadable image files (corrupt, truncated, empty) are skipped, listed in the log and in the run's
    ``data/summary.json`` (default), or stop the run with ``strict=true``; a class left with no readable
    file stops it too. ``cache_verify=true`` keys the cache by each file's content too, not only its
    size and modification time."""

    def __init__(
        self, in_memory: bool = True, strict: bool = False, cache: bool = True, cache_verify: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.in_memory = in_memory
        self.strict = strict
        self.cache = cache
        self.cache_verify = cache_verify
        self.unreadable: dict[str, str] = {}
        self.gray = False  # every sampled file single-channel: trained as one channel unless ``rgb``
        self._scanned: list[tuple[ImageFiles, CacheEntry | None]] | None = None

    @property
    def files_root(self) -> Path:
        """The folder the splits' ``sources`` (the scanned files' paths) are relative to."""
        return self.root

    def scan(self) -> list[ImageFiles]:
        """The dataset's file lists (e.g. a training and a test tree); raises :class:`DataError` when the
        data is missing."""
        raise NotImplementedError

    def _scanned_files(self) -> list[tuple[ImageFiles, CacheEntry | None]]:
        """:meth:`scan` and the cache entry of each list (stats every file), once per datamodule; sets
        ``img_size`` when it is None (the native size)."""
        if self._scanned is None:
            scanned = self.scan()
            self._check_images(scanned)
            self._scanned = [
                (files, cache_entry(files, self.img_size, self.cache_verify) if self.cache else None)
                for files in scanned
            ]
        return self._scanned

    @property
    def in_chans(self) -> int:
        return 1 if self.gray and not self.rgb else 3

    def _check_images(self, lists: list[ImageFiles]) -> None:
        """From the sampled files' headers: ``gray`` when they are all single-channel, and with
        ``img_size=None`` the images' own size when they share one square size, else :data:`MIXED_SIZE` or
        the largest image's longer side if smaller (no upscaling by default). A warning when ``img_size``
        grows even the largest image more than 2x."""
        headers = [sample_headers(files) for files in lists]
        sizes = set().union(*(size for size, _ in headers))
        modes = set().union(*(mode for _, mode in headers))
        self.gray = bool(modes) and modes <= GRAY_MODES
        largest = max((max(size) for size in sizes), default=MIXED_SIZE)
        folder = lists[0].folder if lists else self.root
        if self.gray and self.rgb:
            log.info(
                "images in %s are single-channel: served as 3 equal channels, as the pretrained backbone takes RGB",
                folder,
            )
        if self.img_size is None:
            (width, height), *others = sorted(sizes) or [(largest, largest)]
            if not others and width == height:
                self.img_size = width
                log.info("images in %s are %dx%d: trained at that size (data.img_size resizes)", folder, width, width)
            else:
                self.img_size = min(MIXED_SIZE, largest)
                log.info(
                    "images in %s differ in size or are not square (%d sizes, up to %d px): resized to %dx%d "
                    "(data.img_size chooses)",
                    folder,
                    len(sizes),
                    largest,
                    self.img_size,
                    self.img_size,
                )
        warn_if_upscaled(largest, self.img_size, folder)

    def prepare_data(self) -> None:
        """Decode each file list into the cache (with ``in_memory=false``, only find its unreadable files),
        unless it is there."""
        super().prepare_data()
        for files, entry in self._scanned_files():
            if entry is not None:
                prepare_cache(entry, files, pixels=self.in_memory)

    def read_files(self) -> list[DecodedFiles]:
        """The readable files of each list with their pixels: memory-mapped from the cache when it is
        there, else decoded into memory (nothing is written); none with ``in_memory=false``. Sets
        ``class_names`` from the first list."""
        decoded = []
        for files, entry in self._scanned_files():
            opened = open_cache(entry, self.in_memory) if entry is not None else None
            if opened is None:
                if self.in_memory:
                    log.info("decoding %d images in %s into memory (no cache)", len(files.paths), files.folder)
                opened = decode_files(files, self.img_size, keep=self.in_memory)
            pixels, unreadable = opened
            if pixels is not None and self.in_chans == 1:
                pixels = pixels[:, :1]  # gray images are decoded (and cached) as three equal channels
            readable = np.array([p not in unreadable for p in files.paths], dtype=bool)
            if unreadable:
                self._report_unreadable(files, unreadable, readable)
            decoded.append(DecodedFiles(files.subset(readable), pixels, np.flatnonzero(readable)))
        self.class_names = decoded[0].files.class_names
        return decoded

    def _report_unreadable(self, files: ImageFiles, unreadable: dict[str, str], readable: np.ndarray) -> None:
        if self.strict:
            raise DataError(
                f"{len(unreadable)} unreadable image file(s) (data.strict=true):\n{self._listing(unreadable)}"
            )
        classes = len(files.class_names)
        lost = (np.bincount(files.labels, minlength=classes) > 0) & (
            np.bincount(files.labels[readable], minlength=classes) == 0
        )
        if lost.any():
            names = [files.class_names[c] for c in np.flatnonzero(lost)]
            in_lost = {
                p: unreadable[p] for p, label in zip(files.paths, files.labels) if lost[label] and p in unreadable
            }
            raise DataError(
                f"class folder(s) {names} in {files.folder} hold no readable image file, only "
                f"{len(in_lost)} unreadable one(s):\n{self._listing(in_lost)}"
            )
        log.warning("skipped %d unreadable image file(s):\n%s", len(unreadable), self._listing(unreadable))
        self.unreadable.update(unreadable)

    def _listing(self, unreadable: dict[str, str]) -> str:
        """The first ``MAX_LISTED`` unreadable files with their errors, one per line."""
        listing = "\n".join(f"  {self.files_root / p}: {e}" for p, e in list(unreadable.items())[:MAX_LISTED])
        return listing + (f"\n  ... and {len(unreadable) - MAX_LISTED} more" if len(unreadable) > MAX_LISTED else "")

    def dataset(self, split: str) -> Dataset:
        chosen = self.splits[split]
        if chosen.pixels is not None:
            return super().dataset(split)
        return FileImageDataset(
            self.files_root, chosen.sources, chosen.labels, self.img_size, self.strict, self.in_chans
        )

    def evaluation_split(self, name: str) -> Split:
        """The split; with ``in_memory=false`` its images decoded from their files."""
        split = self.splits[name]
        if split.pixels is not None or not len(split):
            return split
        images, _ = FileImageDataset(
            self.files_root, split.sources, split.labels, self.img_size, strict=True, channels=self.in_chans
        ).__getitems__(range(len(split)))
        return Split(images, split.labels, split.sources)

    def summary(self) -> dict:
        return {**super().summary(), "unreadable_files": self.unreadable}
