"""Decode a file list once into one uint8 tensor, cached next to the data so later runs start in
seconds: ``<folder>/.cnnlab-cache/images-<size>px-<key>.pt``, keyed by a hash of the file list (paths
and sizes) and the image size."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.images import UNREADABLE_IMAGE_ERRORS, ImageFiles, decode_image, to_chw_tensor

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".cnnlab-cache"
CACHE_FORMAT = 1  # bump when decode_image changes what it returns


def cache_path(files: ImageFiles, img_size: int) -> Path:
    """Where the decoded pixels of ``files`` at ``img_size`` are cached."""
    sizes = [(files.root / p).stat().st_size for p in files.paths]
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, img_size, files.paths, sizes]).encode()).hexdigest()[:16]
    return files.folder / CACHE_DIRNAME / f"images-{img_size}px-{key}.pt"


def _try_decode(path: Path, img_size: int) -> np.ndarray | str:
    try:
        return decode_image(path, img_size)
    except UNREADABLE_IMAGE_ERRORS as error:
        return f"{type(error).__name__}: {error}"


def decode_cached(files: ImageFiles, img_size: int) -> tuple[torch.Tensor, dict[str, str]]:
    """uint8 (N, 3, S, S) of the readable files in order, and {path: error} of the unreadable ones."""
    path = cache_path(files, img_size)
    if path.exists():
        cached = torch.load(path, weights_only=True)
        log.info("loaded %d decoded images from %s", len(cached["images"]), path)
        return cached["images"], cached["unreadable"]
    log.info("decoding %d images in %s at %dx%d (once; cached in %s)", len(files.paths), files.folder, img_size, img_size, path.parent)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda p: _try_decode(files.root / p, img_size), files.paths))
    unreadable = {p: d for p, d in zip(files.paths, decoded) if isinstance(d, str)}
    readable = [d for d in decoded if not isinstance(d, str)]
    images = to_chw_tensor(readable) if readable else torch.empty(0, 3, img_size, img_size, dtype=torch.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"images": images, "unreadable": unreadable}, tmp)
        os.replace(tmp, path)  # atomic: parallel runs never read a half-written cache
    except OSError as error:
        log.warning("could not write the image cache %s (%s); the next run decodes again", path, error)
    return images, unreadable
