"""Finding, safely loading and checking checkpoints, for resuming a run and for using a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.training.module import ImageClassifier, model_config

# hyperparameters that must agree for a checkpoint's weights to fit this run's network
ARCHITECTURE_KEYS = ("model", "activation", "num_classes", "in_chans")
# packages whose classes a checkpoint's hparams may name in `_target_` without trust_checkpoint=true
TRUSTED_TARGET_PREFIXES = ("cnnlab.", "torch.", "timm.")


def resolve_checkpoint(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means ``<run dir>/checkpoints/last.ckpt``; any other value is a file path."""
    if ckpt_path is None:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (ckpt_path=last looks in the run dir: pass the killed run's hydra.run.dir=...)" if ckpt_path == "last" else ""
        raise CnnlabError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The training run directory a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` -> ``<run>``)."""
    parent = Path(ckpt_path).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint; plain tensors and containers only unless ``trust`` (``trust_checkpoint=true``)."""
    if not Path(path).is_file():
        raise CnnlabError(f"no checkpoint at {path}")
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


def _targets(node: Any) -> Iterable[str]:
    """Every ``_target_`` string in nested dicts/lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _targets(value)


def load_classifier(ckpt_path: str | Path, trust_checkpoint: bool = False, device: str = "cpu") -> ImageClassifier:
    """Load an :class:`ImageClassifier` for inference (eval mode).

    Without ``trust_checkpoint`` the file is unpickled with ``weights_only=True`` (tensors and plain
    containers only) and the hparams may only instantiate classes from cnnlab, torch or timm, since
    rebuilding the network runs whatever ``_target_`` they name.
    """
    checkpoint = load_checkpoint(ckpt_path, trust_checkpoint)
    hparams = checkpoint.get("hyper_parameters", {})
    untrusted = sorted(t for t in set(_targets(hparams)) if not t.startswith(TRUSTED_TARGET_PREFIXES))
    if untrusted and not trust_checkpoint:
        raise CnnlabError(
            f"{ckpt_path} would instantiate {untrusted} (outside {TRUSTED_TARGET_PREFIXES}); "
            "pass trust_checkpoint=true if you trust it"
        )
    missing = [key for key in ("class_names", "preprocessing") if not hparams.get(key)]
    if missing:
        raise CnnlabError(f"{ckpt_path} has no hparams {missing}; it was not written by cnnlab's training")
    model = model_config(hparams["model"])
    if "pretrained" in model["net"]:  # the checkpoint's weights replace them: skip the download
        hparams["model"] = {**model, "net": {**model["net"], "pretrained": False}}
    module = ImageClassifier(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.to(device).eval()
