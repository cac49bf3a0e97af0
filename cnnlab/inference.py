"""Running a trained classifier outside training: the classifier rebuilt from a checkpoint, the one batch
loop from uint8 images to logits, and the one record of what came out (:class:`Predictions`), shared by
``cnnlab-predict``, ``cnnlab-eval``, ``cnnlab-export`` and the run report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from cnnlab.data.base import Split
from cnnlab.data.images import UNREADABLE_IMAGE_ERRORS, decode_image, rgb_to_gray, to_chw_tensor
from cnnlab.data.preprocess import preprocess
from cnnlab.errors import CnnlabError
from cnnlab.models.pretrained import without_pretrained_weights
from cnnlab.training.checkpoints import load_checkpoint
from cnnlab.training.module import ImageClassifier, model_config, without_compiled_copy
from cnnlab.training.precision import autocast


def load_classifier(ckpt_path: str | Path, trust_checkpoint: bool = False, device: str = "cpu") -> ImageClassifier:
    """The :class:`ImageClassifier` a checkpoint holds, in eval mode on ``device``.

    Without ``trust_checkpoint`` the file is read as data (:func:`cnnlab.training.checkpoints.load_checkpoint`):
    plain tensors and containers, hyperparameters naming only cnnlab's own network parts.
    """
    checkpoint = load_checkpoint(ckpt_path, trust_checkpoint)
    hparams = checkpoint.get("hyper_parameters", {})
    missing = [key for key in ("class_names", "preprocessing", "model") if not hparams.get(key)]
    if missing:
        raise CnnlabError(f"{ckpt_path} has no hparams {missing}; it was not written by cnnlab's training")
    model = model_config(hparams["model"])
    # no torch.compile (minutes of compiling for a few batches; export needs the plain network), and no
    # pretrained download: the checkpoint's weights replace them
    hparams["model"] = {**model, "net": without_pretrained_weights(model["net"]), "compile": False}
    try:
        module = ImageClassifier(**hparams)
        module.load_state_dict(without_compiled_copy(checkpoint["state_dict"]))
    except (TypeError, ValueError, KeyError, RuntimeError) as error:  # e.g. a checkpoint of another cnnlab version
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CnnlabError(f"cannot rebuild the network of {ckpt_path}: {type(error).__name__}: {first_line}") from None
    return module.to(device).eval()


@dataclass
class Predictions:
    """Logits (N, K) for N inputs named by ``sources``; their true labels (N,) and uint8 images (N, C, H, W)
    when known (a dataset split); inputs that could not be read, with why (``{source: error}``)."""

    logits: np.ndarray
    class_names: list[str]
    sources: list[str]
    labels: np.ndarray | None = None
    images: np.ndarray | None = None
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def probs(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index per input."""
        return self.logits.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability given to the predicted class."""
        return self.probs.max(axis=1)

    def top_k(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, class indices), each (N, k), most likely first."""
        k = min(k, len(self.class_names))
        indices = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(self.probs, indices, axis=1), indices


@torch.inference_mode()
def predict(module: ImageClassifier, batches: Iterable[torch.Tensor], precision: str = "32-true") -> np.ndarray:
    """Logits (N, K) of ``module`` for uint8 (B, C, H, W) image batches, fed the checkpoint's evaluation
    preprocessing and computed in ``precision`` (a run's, so that they equal what its test saw)."""
    was_training = module.training
    module.eval()
    device = module.device
    logits = []
    with autocast(precision, device):
        for images in batches:
            logits.append(module(preprocess(images.to(device), module.hparams.preprocessing)).float().cpu())
    module.train(was_training)
    return torch.cat(logits).numpy() if logits else np.zeros((0, len(module.hparams.class_names)), np.float32)


def predict_split(module: ImageClassifier, split: Split, batch_size: int, precision: str = "32-true") -> Predictions:
    """:class:`Predictions` for every image of a dataset split (its images in memory), in order."""
    images = split.images  # gathered once
    logits = predict(module, (images[i : i + batch_size] for i in range(0, len(split), batch_size)), precision)
    return Predictions(
        logits=logits,
        class_names=list(module.hparams.class_names),
        sources=list(split.sources) or [str(i) for i in range(len(split))],
        labels=split.labels.cpu().numpy(),
        images=images.cpu().numpy(),
    )


def predict_files(
    module: ImageClassifier,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    unreadable: dict[str, str] | None = None,
    progress: bool = False,
) -> Predictions:
    """:class:`Predictions` for image files, decoded as the checkpoint's images were (RGB, or gray for a
    single-channel model such as one trained on Fashion-MNIST; ``img_size``).

    A file that cannot be decoded is listed in ``Predictions.unreadable`` (after the entries of
    ``unreadable``, e.g. inputs that were never found) instead of stopping the batch. ``progress`` shows a
    progress bar.
    """
    in_chans = module.hparams.preprocessing["in_chans"]
    if in_chans not in (1, 3):
        raise CnnlabError(f"image files are decoded to RGB or gray; this model takes in_chans={in_chans}")
    img_size = module.hparams.preprocessing["img_size"]
    result = Predictions(np.zeros((0, 0)), list(module.hparams.class_names), [], unreadable=dict(unreadable or {}))

    starts: Iterable[int] = range(0, len(paths), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=f"Predicting {len(paths)} images")

    def decoded_batches() -> Iterator[torch.Tensor]:
        for start in starts:
            images = []
            for path in paths[start : start + batch_size]:
                try:
                    images.append(decode_image(Path(path), img_size))
                    result.sources.append(str(path))
                except UNREADABLE_IMAGE_ERRORS as error:
                    result.unreadable[str(path)] = f"{type(error).__name__}: {error}"
            if images:
                batch = to_chw_tensor(images)
                yield batch if in_chans == 3 else rgb_to_gray(batch)

    result.logits = predict(module, decoded_batches())
    return result
