"""The training objective: cross-entropy plus Keras-style L2 penalties on named layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.cifar_cnns import CNNBaselineS4
from cnnlab.training.loss import CrossEntropyLoss


def test_l2_penalty_is_lambda_times_squared_kernel_of_the_named_layer_only():
    torch.manual_seed(0)
    net = CNNBaselineS4(num_classes=10)
    logits, labels = torch.randn(4, 10), torch.tensor([0, 3, 5, 9])
    loss = CrossEntropyLoss(l2={"dense.1": 1e-3}).bind(net)
    kernel = net.dense[1].weight
    expected = F.cross_entropy(logits, labels) + 1e-3 * (kernel.detach().double() ** 2).sum()
    assert loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    # the gradient of the penalty is 2 * lambda * W on the kernel, and nothing on its bias or other layers
    net.zero_grad()
    loss.penalty().backward()
    assert torch.allclose(kernel.grad, 2e-3 * kernel.detach())
    assert net.dense[1].bias.grad is None and net.head.weight.grad is None


def test_label_smoothing_matches_torch():
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    loss = CrossEntropyLoss(label_smoothing=0.1).bind(nn.Linear(2, 2))
    assert loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item())


def test_unknown_layer_is_named_with_close_names():
    with pytest.raises(ValueError, match=r"no layer 'dense.2' with a weight; did you mean dense.1"):
        CrossEntropyLoss(l2={"dense.2": 1e-3}).bind(CNNBaselineS4(num_classes=10))
