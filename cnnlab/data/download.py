"""Run a torchvision download once per node, with a short socket timeout, so a machine without network
fails fast with one message instead of hanging or printing a wall of urllib tracebacks."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

from cnnlab.data.cache import file_lock, lock_file
from cnnlab.data.errors import DataError

DOWNLOAD_TIMEOUT_SEC = 15.0


def download_or_explain(dataset: str, url: str, layout: str, download: Callable[[], object]) -> None:
    """Call ``download()``; on a network or checksum failure raise :class:`DataError` naming the
    dataset, the URL tried and the folder ``layout`` to place the files in by hand."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SEC)
    try:
        download()
    except (OSError, RuntimeError) as error:
        cause = " ".join(f"{type(error).__name__}: {error}".split())  # one line, whatever the cause's message
        raise DataError(
            f"{dataset} could not be downloaded from {url} ({cause}); download it on a machine with network "
            f"access and place it as {layout}, or point data.root at a folder that already holds it"
        ) from None  # the message carries the cause; the urllib traceback would only bury it
    finally:
        socket.setdefaulttimeout(previous)


def download_once(
    root: Path, is_present: Callable[[], bool], dataset: str, url: str, layout: str, download: Callable[[], object]
) -> None:
    """:func:`download_or_explain` unless ``is_present()``, under a lock on ``root``: of processes started
    together (torchrun, SLURM) one downloads, the others wait and then find the data present."""
    if is_present():
        return
    with file_lock(lock_file("download", root), f"downloading {dataset} into {root}"):
        if not is_present():
            download_or_explain(dataset, url, layout, download)
