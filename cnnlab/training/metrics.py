"""The running metrics a training, validation or test epoch logs."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class LossAccuracy(Metric):
    """Mean loss per image and top-1 accuracy over an epoch, summed across processes.

    One update is eight small tensor ops. torchmetrics' ``MeanMetric`` plus ``MulticlassAccuracy`` take 33,
    which cost ~0.3 ms a step between training steps on a 2-core CPU: 3% of a small CIFAR CNN's step.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("loss_sum", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """``loss``: the batch's mean loss; ``logits``: (N, K); ``labels``: (N,) class indices."""
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.count += len(labels)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, accuracy)."""
        return self.loss_sum / self.count, self.correct / self.count
