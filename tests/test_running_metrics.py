"""The epoch metrics the LightningModule logs, against torchmetrics and the per-image mean they stand for."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from cnnlab.training.metrics import LossAccuracy


def test_loss_accuracy_over_uneven_batches_equals_the_per_image_figures():
    torch.manual_seed(0)
    logits, labels = torch.randn(300, 7), torch.randint(0, 7, (300,))
    metrics, reference = LossAccuracy(), MulticlassAccuracy(7, average="micro")
    for batch in (slice(0, 128), slice(128, 256), slice(256, 300)):  # a short last batch, as epochs end
        metrics.update(F.cross_entropy(logits[batch], labels[batch]), logits[batch], labels[batch])
        reference.update(logits[batch], labels[batch])
    loss, accuracy = metrics.compute()
    assert torch.allclose(loss, F.cross_entropy(logits, labels), atol=1e-6)
    assert accuracy == reference.compute() and 0 < accuracy < 1
    metrics.reset()
    metrics.update(torch.tensor(0.5), torch.eye(3), torch.tensor([0, 1, 0]))
    assert [round(float(v), 4) for v in metrics.compute()] == [0.5, 0.6667]
