"""Finding, safely loading and checking checkpoints, for resuming a run and for using a trained model
(:mod:`cnnlab.inference` builds the classifier)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.training.module import model_config
from cnnlab.untrusted import check_checkpoint_hparams

# hyperparameters that must agree for a checkpoint's weights to fit this run's network
ARCHITECTURE_KEYS = ("model", "activation", "num_classes", "in_chans")


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The run dir's checkpoint a resume continues from: the newer of ``checkpoints/last.ckpt`` (the end of
    the latest finished epoch) and ``checkpoints/interrupted.ckpt`` (where Ctrl-C or SIGTERM stopped the
    run); either resumes exactly. None when there is neither."""
    found = [output_dir / "checkpoints" / name for name in ("last.ckpt", "interrupted.ckpt")]
    found = [path for path in found if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns) if found else None


def resolve_checkpoint(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means the run dir's newest checkpoint (:func:`newest_checkpoint`); any other value is a file
    path."""
    if ckpt_path is None:
        return None
    last = newest_checkpoint(output_dir) or output_dir / "checkpoints" / "last.ckpt"
    path = last if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = (
            " (ckpt_path=last looks in the run dir: pass the killed run's hydra.run.dir=...)"
            if ckpt_path == "last"
            else ""
        )
        raise CnnlabError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The training run directory a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` -> ``<run>``)."""
    parent = Path(ckpt_path).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def _is_torch_archive(path: Path) -> bool:
    """Whether ``path`` is a zip file as ``torch.save`` writes (``<name>/data.pkl`` inside)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """A cnnlab (Lightning) checkpoint as a dict.

    Unless ``trust`` (``trust_checkpoint=true``) it is unpickled with ``weights_only=True`` (tensors and
    plain containers only) and its hyperparameters must pass :func:`cnnlab.untrusted.check_checkpoint_hparams`,
    since rebuilding the network runs what they name. Anything else than a torch archive holding a dict
    with ``state_dict`` is "not a cnnlab checkpoint", with no advice to trust it.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"no checkpoint at {path}")
    not_a_checkpoint = CnnlabError(f"not a cnnlab checkpoint: {path}")
    if not _is_torch_archive(path):
        raise not_a_checkpoint
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        if trust or "GLOBAL" not in str(error):  # torch names the class or function it refused
            raise not_a_checkpoint from None
        raise CnnlabError(
            f"checkpoint {path} holds more than plain tensors and containers, so it was not unpickled "
            "(a pickle can run code). If you trust its source, add trust_checkpoint=true."
        ) from None
    except Exception:
        raise not_a_checkpoint from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise not_a_checkpoint
    if not trust:
        check_checkpoint_hparams(checkpoint.get("hyper_parameters", {}), str(path))
    return checkpoint


def check_compatible(checkpoint: dict[str, Any], hparams: dict[str, Any], path: str) -> None:
    """Raise :class:`ConfigError` naming each setting where the checkpoint and this run differ."""
    saved = dict(checkpoint.get("hyper_parameters", {}))
    if "model" in saved:  # the network, not how it runs (channels_last, compile may change on resume)
        saved["model"] = model_config(saved["model"])["net"]
    hparams = {**hparams, "model": model_config(hparams["model"])["net"]}
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
