"""A Hydra callback that refuses a run or sweep dir that cannot be a directory with one line, before
Hydra's own attempt to create it ends in a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RunDirCheck(Callback):
    """Checks ``hydra.run.dir`` (a run) or ``hydra.sweep.dir`` (a multirun)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check("hydra.run.dir", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check("hydra.sweep.dir", str(config.hydra.sweep.dir))


def _check(key: str, value: str) -> None:
    path = Path(value)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        sys.exit(
            f"{Path(sys.argv[0]).name}: error: {key}={value} cannot be created: {blocking} is a file, not a "
            f"directory. Choose another {key}=..."
        )
