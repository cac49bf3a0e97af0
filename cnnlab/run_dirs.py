"""Run directory names people can read (``outputs/2026-12-02/14-46-57``) that two runs started in the same
second still do not share: the second one gets ``14-46-57-2``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

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
