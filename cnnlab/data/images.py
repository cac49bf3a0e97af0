"""Image files in ``<Class>/*`` folders: finding them, and decoding one to uint8 RGB at a fixed size.

The one path shared by every folder dataset (EuroSAT, Fruits-360, any image folder) and by both ways
of serving them, the decoded uint8 cache and the per-image PIL loader (``data.in_memory=false``), so
both see identical pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from cnnlab.data.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# what PIL raises on zero-byte, truncated, corrupt or non-image files
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
GRAY_MODES = SIXTEEN_BIT_MODES | {"1", "L", "LA", "F"}  # PIL modes of single-channel images
SIZE_SAMPLE = 1000  # files whose headers tell a folder's native image size
UPSCALE_WARNING = 2.0  # a resize growing images more than this much is said in the log
RESIZE_CHUNK = 1000  # images resized at once: the float copy of 50,000 images at 224 px would not fit
_warned_upscales: set[tuple[int, int]] = set()


@dataclass
class ImageFiles:
    """Image files with their labels; ``paths`` are relative to ``root``; ``folder`` is the scanned tree."""

    root: Path
    folder: Path
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]

    def subset(self, keep: np.ndarray) -> ImageFiles:
        """The files at indices (or boolean mask) ``keep``."""
        index = np.flatnonzero(keep) if keep.dtype == bool else keep
        return ImageFiles(self.root, self.folder, [self.paths[i] for i in index], self.labels[index], self.class_names)


def scan_class_folders(root: Path, folder: Path, layout: str, class_names: Sequence[str] | None = None) -> ImageFiles:
    """Every image file below ``folder/<Class>/``, sorted; classes are the sub-folders (sorted), or
    ``class_names`` when given (e.g. a test tree labelled like its training tree).

    Hidden files and folders (e.g. the ``.cnnlab-cache/`` earlier versions wrote there) are ignored. A
    missing folder, an empty class folder or fewer than two classes raise :class:`DataError` quoting the
    expected ``layout``.
    """
    root, folder = Path(root), Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a folder. Expected layout:\n  {layout}")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(class_names) if class_names is not None else [p.name for p in class_dirs]
    unknown = sorted({p.name for p in class_dirs} - set(names))
    if unknown:
        raise DataError(
            f"{folder} has class folders {unknown} that are not among the {len(names)} known classes. "
            f"Expected layout:\n  {layout}"
        )
    if len(names) < 2:
        raise DataError(
            f"{folder} has {len(names)} class folder(s); classification needs at least 2. Expected layout:\n  {layout}"
        )
    paths, labels, empty = [], [], []
    for class_dir in class_dirs:
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )
        if not files:
            empty.append(class_dir.name)
        paths += [p.relative_to(root).as_posix() for p in files]
        labels += [names.index(class_dir.name)] * len(files)
    if empty:
        raise DataError(
            f"class folder(s) {empty} in {folder} hold no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    return ImageFiles(root, folder, paths, np.asarray(labels, dtype=np.int64), names)


def decode_image(path: Path, img_size: int) -> np.ndarray:
    """(img_size, img_size, 3) uint8 RGB, upright: a JPEG's EXIF orientation (phone photos) is applied.
    Grayscale, palette, RGBA and CMYK become RGB (alpha dropped); 16-bit images are scaled to 8 bits.
    Raises one of ``UNREADABLE_IMAGE_ERRORS`` for bad files."""
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in SIXTEEN_BIT_MODES:
            image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).round().astype(np.uint8))
        elif image.mode == "P":
            image = image.convert("RGBA")
        image = image.convert("RGB")
    if image.size != (img_size, img_size):
        image = image.resize((img_size, img_size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def sample_headers(files: ImageFiles, limit: int = SIZE_SAMPLE) -> tuple[set[tuple[int, int]], set[str]]:
    """The (width, height) sizes and PIL modes of up to ``limit`` files spread evenly over ``files``, from
    their headers (no pixels decoded); unreadable files are left to the decoder to report."""
    step = max(1, len(files.paths) // limit)
    sizes, modes = set(), set()
    for path in files.paths[::step][:limit]:
        try:
            with Image.open(files.root / path) as image:
                sizes.add(ImageOps.exif_transpose(image).size if image.format == "JPEG" else image.size)
                modes.add(image.mode)
        except UNREADABLE_IMAGE_ERRORS:
            continue
    return sizes, modes


def warn_if_upscaled(native: int, img_size: int, where: object) -> None:
    """Say in the log (once per pair of sizes) that ``img_size`` grows ``native``-pixel images more than
    :data:`UPSCALE_WARNING` times: more cache and compute for no new detail, usually by mistake."""
    if img_size > UPSCALE_WARNING * native and (native, img_size) not in _warned_upscales:
        _warned_upscales.add((native, img_size))
        log.warning(
            "data.img_size=%d upscales the %dx%d images of %s %.1fx: the cache and every layer grow with it for no "
            "new detail; drop data.img_size to train at the native size",
            img_size,
            native,
            native,
            where,
            img_size / native,
        )


def resize_images(images: torch.Tensor, img_size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images resized to (img_size, img_size), bilinear and antialiased, in chunks;
    returned as they are when already that size."""
    if images.shape[-2:] == (img_size, img_size):
        return images
    size = (img_size, img_size)
    return torch.cat(
        [
            F.interpolate(chunk.float(), size=size, mode="bilinear", antialias=True)
            .clamp(0, 255)
            .round()
            .to(torch.uint8)
            for chunk in images.split(RESIZE_CHUNK)
        ]
    )


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB to uint8 (N, 1, H, W) luminance (ITU-R 601, as PIL's ``convert("L")``): a gray
    image saved as RGB comes back exactly."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def to_chw_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack HWC uint8 arrays into one (N, C, H, W) uint8 tensor."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


class FileImageDataset(Dataset):
    """The per-image PIL path (``data.in_memory=false``): each batch is decoded from disk, in DataLoader
    workers, into the same (uint8 (B, C, H, W), int64 (B,)) batches as the in-memory path.

    An unreadable file is dropped from its batch with a warning naming it, or raises when ``strict``.
    """

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        labels: torch.Tensor,
        img_size: int,
        strict: bool = False,
        channels: int = 3,
    ) -> None:
        self.root = Path(root)
        self.channels = channels  # 1: the first of the decoded RGB channels, equal for a gray image
        self.paths = list(paths)
        self.labels = labels
        self.img_size = img_size
        self.strict = strict

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, kept = [], []
        for i in indices:
            path = self.root / self.paths[i]
            try:
                images.append(decode_image(path, self.img_size))
                kept.append(i)
            except UNREADABLE_IMAGE_ERRORS as error:
                if self.strict:
                    raise DataError(f"unreadable image {path}: {error} (data.strict=true)") from error
                log.warning("skipping unreadable image %s: %s", path, error)
        if not images:
            raise DataError(f"every image of a batch was unreadable, e.g. {self.root / self.paths[indices[0]]}")
        return to_chw_tensor(images)[:, : self.channels], self.labels[torch.as_tensor(kept)]
