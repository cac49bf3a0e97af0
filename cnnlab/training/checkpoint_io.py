"""Checkpoint writing that a crash cannot corrupt."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cnnlab.errors import CnnlabError

DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same directory, flushes it to disk, then
    renames it over the old one: a kill during a save leaves the previous good checkpoint in place.

    (Lightning's own save stages the file in the system temp dir, and moving it across file systems
    is a copy, which a crash can cut short.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp_name, path)
        except BaseException as error:
            Path(tmp_name).unlink(missing_ok=True)
            reason = _disk_full(error)
            if reason:
                previous = (
                    f"the previous {path.name} is intact" if path.is_file() else f"no earlier {path.name} was there"
                )
                raise CnnlabError(
                    f"{reason} while saving checkpoint {path}; {previous}. Free space there, or start the run on "
                    "another disk (paths.log_dir=... or hydra.run.dir=...)"
                ) from None
            raise


def _disk_full(error: BaseException | None) -> str | None:
    """Why the disk refused the write, if it did: torch.save reports a full disk as a RuntimeError
    (``enforce fail at inline_container.cc``) raised while handling the file's OSError."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return DISK_FULL[error.errno]
        error = error.__cause__ or error.__context__
    return None
