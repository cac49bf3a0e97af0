"""Run a torchvision download with a short socket timeout, so a machine without network fails fast
with one message instead of hanging or printing a wall of urllib tracebacks."""

from __future__ import annotations

import socket
from typing import Callable

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
        raise DataError(
            f"{dataset} could not be downloaded from {url} ({type(error).__name__}: {error}).\n"
            f"Download it on a machine with network access and place it as:\n  {layout}\n"
            f"or point data.root at a folder that already holds it."
        ) from None  # the message carries the cause; the urllib traceback would only bury it
    finally:
        socket.setdefaulttimeout(previous)
