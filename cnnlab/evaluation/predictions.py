"""Run a trained classifier over one split and keep what the report needs: logits, labels, images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnlab.data.base import Split
from cnnlab.data.preprocess import preprocess
from cnnlab.training.precision import autocast


@dataclass
class Predictions:
    """Logits (N, K), true labels (N,) and the uint8 images (N, C, H, W) of one split."""

    logits: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    class_names: list[str]
    sources: list[str]

    @property
    def probs(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability given to the predicted class."""
        return self.probs.max(axis=1)


def run_precision_of(results: dict) -> str:
    """The precision a run trained and tested in, from its results.json (fp32 for runs that predate it)."""
    return results.get("runtime", {}).get("precision", "32-true")


@torch.inference_mode()
def collect_predictions(
    net: nn.Module, split: Split, preprocessing: dict, class_names: list[str], batch_size: int = 256,
    precision: str = "32-true",
) -> Predictions:
    """Logits of ``net`` (e.g. an ``ImageClassifier``) for every image of ``split``, in order, computed in
    ``precision`` (the run's, so that they equal what its ``trainer.test`` saw)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    images = split.images  # gathered once
    with autocast(precision, device):
        logits = [
            net(preprocess(images[start : start + batch_size].to(device), preprocessing)).float().cpu()
            for start in range(0, len(split), batch_size)
        ]
    net.train(was_training)
    return Predictions(
        logits=torch.cat(logits).numpy() if logits else np.zeros((0, len(class_names)), np.float32),
        labels=split.labels.cpu().numpy(),
        images=images.cpu().numpy(),
        class_names=list(class_names),
        sources=list(split.sources) or [str(i) for i in range(len(split))],
    )
