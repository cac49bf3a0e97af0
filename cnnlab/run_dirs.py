"""Run directories: names people can read (``outputs/2026-12-02/14-46-57``) that two runs started in the same
second still do not share (the second one gets ``14-46-57-2``), and a one-line refusal of a run or sweep dir
that cannot be a directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

RESOLVER = "unique_dir"


def unique_dir(path: str) -> str:
    """``path``, else ``path-2``, ``path-3``, ...: the first that does not exist yet, created here, so that
    of two processes asking at once each gets its own (``mkdir`` succeeds for one only)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, number = Path(path), 1
    while True:
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            number += 1
            candidate = Path(f"{path}-{number}")


def register_resolver() -> None:
    """Make ``${unique_dir:...}`` available to Hydra's run and sweep dirs (conf/hydra/default.yaml). Cached
    per config, as Hydra's ``${now:...}``: every later read of the run dir gives the same directory."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, unique_dir, use_cache=True)


class RunDirCheck(Callback):
    """A Hydra callback that checks ``hydra.run.dir`` (a run) or ``hydra.sweep.dir`` (a multirun) before Hydra's
    own attempt to create it ends in a traceback."""

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
