"""The decoded-image cache: a file list decoded once, at one image size, into one uint8 ``.npy`` file in
the user's cache directory (never in the data), memory-mapped by every process that trains on it.

Where: ``$CNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnlab``, else ``~/.cache/cnnlab``; the files are
``images-v<CACHE_FORMAT>/<folder>-<place>-<size>px-<fingerprint>.npy``, where ``place`` hashes the scanned
folder's absolute path and ``fingerprint`` the file list: each file's relative path, byte size and
modification time, and with ``verify`` a hash of its content. A changed file list, a file replaced by
another of the same size, another image size or a new ``CACHE_FORMAT`` make another name; writing it
deletes the superseded files of the same folder and size.

The ``.npy`` holds one (3, S, S) row per file of the list, in order (zeros for unreadable files); the
``.json`` beside it names the unreadable files (the per-image path, ``data.in_memory=false``, keeps only
that). Written once: decoded in chunks into a temporary file in the cache directory, fsync'd and renamed,
under an exclusive ``flock`` on ``<name>.lock`` that concurrent runs on one dataset wait on, so it is built
once. Opened copy-on-write (``np.load(mmap_mode="c")``): the pages are the OS page cache's, shared by every
process, read from disk on demand and never written back, so the cache may exceed RAM.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from cnnlab.data.images import UNREADABLE_IMAGE_ERRORS, ImageFiles, decode_image

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when decode_image changes what it returns (2: EXIF orientation applied)
CHUNK = 256  # images decoded (and written) at a time
_warned: set[str] = set()  # problems already warned about in this process


def cache_dir() -> Path:
    """``$CNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnlab``, else ``~/.cache/cnnlab``."""
    if os.environ.get("CNNLAB_CACHE_DIR"):
        return Path(os.environ["CNNLAB_CACHE_DIR"]).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = (
        Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    )  # the XDG spec ignores relative paths
    return base / "cnnlab"


def _digest(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def lock_file(kind: str, place: Path) -> Path:
    """The lock file guarding ``kind`` of work (e.g. a download) on the folder ``place``."""
    return cache_dir() / "locks" / f"{kind}-{_digest(str(Path(place).absolute()))}.lock"


@contextlib.contextmanager
def file_lock(path: Path, waiting_for: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` while the block runs; a process that finds it held logs
    what it waits for, then waits. Where no lock can be taken (no writable cache directory, a file
    system without ``flock``) the block runs unlocked: the atomic renames keep the files whole."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        log.debug("running without the lock %s: %s", path, error)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process %s (lock %s)", waiting_for, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            log.debug("running without the lock %s: %s", path, error)
        yield
    finally:
        os.close(fd)  # releases the lock


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


# -- where a file list's cache is ------------------------------------------------------------------
@dataclass(frozen=True)
class CacheEntry:
    """The cache files of one file list at one image size; ``stem`` is their path without a suffix."""

    stem: Path
    shape: tuple[int, int, int, int]  # (files, 3, S, S)

    @property
    def pixels(self) -> Path:
        return Path(f"{self.stem}.npy")

    @property
    def listing(self) -> Path:
        """The JSON naming the unreadable files."""
        return Path(f"{self.stem}.json")

    @property
    def lock(self) -> Path:
        """One lock per folder and size: runs on one dataset build its cache one at a time."""
        return self.stem.parent / f"{self.stem.name.rsplit('-', 1)[0]}.lock"

    def superseded(self) -> list[Path]:
        """Files of earlier fingerprints of the same folder and size."""
        prefix = self.stem.name.rsplit("-", 1)[0] + "-"
        return [
            p
            for p in self.stem.parent.glob(prefix + "*")
            if p.suffix in (".npy", ".json") and not p.name.startswith(self.stem.name + ".")
        ]


def cache_entry(files: ImageFiles, img_size: int, verify: bool = False) -> CacheEntry:
    """Where the decoded pixels of ``files`` at ``img_size`` are cached (stats every file, and with
    ``verify`` reads each one)."""
    folder = files.folder.absolute()
    fingerprint = hashlib.sha256(json.dumps([CACHE_FORMAT, str(folder), img_size, verify]).encode())
    for path in files.paths:
        file = files.root / path
        stat = file.stat()
        fingerprint.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        if verify:
            with open(file, "rb") as handle:
                fingerprint.update(hashlib.file_digest(handle, "blake2b").digest())
    name = re.sub(r"[^A-Za-z0-9_]+", "_", folder.name)[:40] or "root"
    stem = (
        cache_dir()
        / f"images-v{CACHE_FORMAT}"
        / f"{name}-{_digest(str(folder), 8)}-{img_size}px-{fingerprint.hexdigest()[:20]}"
    )
    return CacheEntry(stem, (len(files.paths), 3, img_size, img_size))


# -- decoding -------------------------------------------------------------------------------------
def _try_decode(path: Path, img_size: int) -> np.ndarray | str:
    try:
        return decode_image(path, img_size)
    except UNREADABLE_IMAGE_ERRORS as error:
        return f"{type(error).__name__}: {error}"


def decode_chunks(files: ImageFiles, img_size: int) -> Iterator[tuple[np.ndarray, dict[str, str]]]:
    """``files`` decoded in order, ``CHUNK`` at a time, in threads (PIL releases the GIL): uint8
    (n, 3, S, S) arrays with zeros for unreadable files, and {path: error} of those."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files.paths), CHUNK):
            paths = files.paths[start : start + CHUNK]
            chunk = np.zeros((len(paths), 3, img_size, img_size), dtype=np.uint8)
            unreadable = {}
            for i, (path, decoded) in enumerate(
                zip(paths, pool.map(lambda p: _try_decode(files.root / p, img_size), paths))
            ):
                if isinstance(decoded, str):
                    unreadable[path] = decoded
                else:
                    chunk[i] = decoded.transpose(2, 0, 1)
            yield chunk, unreadable


def decode_files(files: ImageFiles, img_size: int, keep: bool = True) -> tuple[torch.Tensor | None, dict[str, str]]:
    """Decode ``files`` into memory: uint8 (N, 3, S, S), one row per file (zeros for unreadable ones),
    or None when ``keep`` is false (a check of which files are readable); and {path: error}."""
    images = np.empty((len(files.paths), 3, img_size, img_size), dtype=np.uint8) if keep else None
    unreadable: dict[str, str] = {}
    start = 0
    for chunk, bad in decode_chunks(files, img_size):
        if images is not None:
            images[start : start + len(chunk)] = chunk
        start += len(chunk)
        unreadable.update(bad)
    return (None if images is None else torch.from_numpy(images)), unreadable


# -- writing and opening --------------------------------------------------------------------------
def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` into a temporary file beside ``path``, fsync'd and renamed over ``path``; no temporary
    file is left behind when that fails."""
    tmp = _temporary(path)
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _valid_pixels(entry: CacheEntry) -> bool:
    """Whether the ``.npy`` exists with the expected header and length."""
    try:
        with open(entry.pixels, "rb") as handle:
            np.lib.format.read_magic(handle)
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            header = handle.tell()
        size = entry.pixels.stat().st_size
    except (OSError, ValueError):
        return False
    return shape == entry.shape and not fortran and dtype == np.uint8 and size == header + int(np.prod(shape))


def _read_listing(entry: CacheEntry) -> dict[str, str] | None:
    try:
        return json.loads(entry.listing.read_text())["unreadable"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare_cache(entry: CacheEntry, files: ImageFiles, pixels: bool = True) -> None:
    """Write the cache ``entry`` of ``files`` unless it is there: the decoded pixels and the unreadable
    files, or with ``pixels=False`` the unreadable files alone. Processes that call this together build
    it once; the others wait for it. A cache that cannot be written (full disk, read-only cache
    directory) is a warning: the run goes on with its images decoded in memory."""
    if _ready(entry, pixels):
        return
    with file_lock(entry.lock, f"decoding {entry.pixels.name}"):
        if _ready(entry, pixels):
            return
        try:
            entry.stem.parent.mkdir(parents=True, exist_ok=True)
            _build(entry, files, pixels)
        except OSError as error:
            _warn_once(
                str(entry.stem.parent),
                "could not write the decoded-image cache in %s (%s); this run decodes its images into memory. "
                "Free space there or point CNNLAB_CACHE_DIR at a writable folder with room.",
                entry.stem.parent,
                error.strerror or error,
            )
            return
        for old in entry.superseded():
            old.unlink(missing_ok=True)  # processes that have it mapped keep reading it


def _ready(entry: CacheEntry, pixels: bool) -> bool:
    return entry.listing.exists() and (not pixels or _valid_pixels(entry))


def _build(entry: CacheEntry, files: ImageFiles, pixels: bool) -> None:
    """Decode ``files`` into the cache files of ``entry``; the listing is renamed into place before the
    pixels, so whoever finds the pixels finds their listing too. Nothing is left behind on failure."""
    img_size = entry.shape[-1]
    unreadable: dict[str, str] = {}
    tmp = _temporary(entry.pixels)
    try:
        if pixels:
            size, free = int(np.prod(entry.shape)), shutil.disk_usage(entry.stem.parent).free
            if free < size:
                raise OSError(
                    errno.ENOSPC,
                    f"{os.strerror(errno.ENOSPC)}: {size / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free",
                )
            log.info(
                "decoding %d images in %s at %dx%d once, into %s",
                len(files.paths),
                files.folder,
                img_size,
                img_size,
                entry.pixels,
            )
            with open(tmp, "xb") as handle:
                header = {"descr": "|u1", "fortran_order": False, "shape": entry.shape}
                np.lib.format.write_array_header_1_0(handle, header)
                for chunk, bad in decode_chunks(files, img_size):
                    handle.write(memoryview(chunk).cast("B"))
                    unreadable.update(bad)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            unreadable = decode_files(files, img_size, keep=False)[1]
        listing = {
            "format": CACHE_FORMAT,
            "folder": str(files.folder.absolute()),
            "img_size": img_size,
            "files": len(files.paths),
            "unreadable": unreadable,
        }
        _write_atomically(entry.listing, json.dumps(listing, indent=1).encode())
        if pixels:
            os.replace(tmp, entry.pixels)
            _fsync_directory(entry.stem.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_cache(entry: CacheEntry, pixels: bool = True) -> tuple[torch.Tensor | None, dict[str, str]] | None:
    """The cached (pixels, unreadable files) of ``entry``, None when it is not there. The pixels (uint8
    (N, 3, S, S), one row per file) are memory-mapped copy-on-write: shared with every other process
    that maps them, read from disk as they are touched; None with ``pixels=False``."""
    unreadable = _read_listing(entry)
    if unreadable is None or (pixels and not _valid_pixels(entry)):
        return None
    if not pixels:
        return None, unreadable
    images = torch.from_numpy(np.load(entry.pixels, mmap_mode="c"))
    log.info("memory-mapped %d decoded images from %s", len(images), entry.pixels)
    return images, unreadable
