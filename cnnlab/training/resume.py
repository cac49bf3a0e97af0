"""Finding and checking the checkpoint a run resumes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError, ConfigError

# hyperparameters that must agree for a checkpoint's weights to fit this run's network
ARCHITECTURE_KEYS = ("model", "activation", "num_classes", "in_chans")


def resolve_checkpoint(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means ``<run dir>/checkpoints/last.ckpt``; any other value is a file path."""
    if ckpt_path is None:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (ckpt_path=last looks in the run dir: pass the killed run's hydra.run.dir=...)" if ckpt_path == "last" else ""
        raise CnnlabError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def load_checkpoint(path: str, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint; plain tensors and containers only unless ``trust`` (``trust_checkpoint=true``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as error:
        if trust:
            raise CnnlabError(f"cannot read checkpoint {path}: {error}") from None
        raise CnnlabError(
            f"checkpoint {path} holds more than plain tensors and containers, so it was not unpickled "
            "(a pickle can run code). If you trust its source, add trust_checkpoint=true."
        ) from None


def check_compatible(checkpoint: dict[str, Any], hparams: dict[str, Any], path: str) -> None:
    """Raise :class:`ConfigError` naming each setting where the checkpoint and this run differ."""
    saved = checkpoint.get("hyper_parameters", {})
    differences = [
        f"{key}: checkpoint has {saved.get(key)!r}, this run has {hparams.get(key)!r}"
        for key in ARCHITECTURE_KEYS
        if key in saved and saved.get(key) != hparams.get(key)
    ]
    if differences:
        raise ConfigError(
            f"checkpoint {path} was trained with a different network; resume with the same overrides. "
            + "; ".join(differences)
        )
