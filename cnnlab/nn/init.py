"""Keras' layer defaults for a PyTorch network (``model.keras_defaults=true``), for the Keras studies (S1-S4).

Where a Keras study is silent on initialization and normalization, its layers ran with Keras' defaults,
which differ from PyTorch's: kernels ``glorot_uniform`` (PyTorch: ``kaiming_uniform(a=sqrt(5))``), biases
zero (PyTorch: uniform), BatchNormalization momentum 0.99 (PyTorch's ``momentum=0.01``: the weight of the
new batch) and epsilon 1e-3 (PyTorch: 1e-5). Checked against Keras 3.15 (tests/test_init.py holds its
numbers). Keras updates the moving variance with the biased batch variance, PyTorch with the unbiased
one: a factor n/(n-1) over the n = batch x height x width values per channel, which is left as it is.
"""

from __future__ import annotations

import math

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

KERAS_BATCHNORM_MOMENTUM = 0.01  # Keras' momentum=0.99 is the weight of the old moving statistics
KERAS_BATCHNORM_EPSILON = 1e-3


def keras_fans(layer: nn.Conv2d | nn.Linear) -> tuple[int, int]:
    """(fan_in, fan_out) of ``layer``'s kernel as Keras computes them (``compute_fans``: receptive field
    times the kernel's last two axes, input then output) for the Keras layer it stands for.

    Dense (in, out) and Conv2D (kh, kw, in/groups, out) give the fans PyTorch computes too. A depthwise
    conv (``groups == in_channels``) is Keras' DepthwiseConv2D, whose kernel is (kh, kw, in, multiplier):
    fans kh*kw*in and kh*kw*multiplier, where PyTorch's (in*multiplier, 1, kh, kw) weight gives kh*kw and
    kh*kw*in*multiplier; the sums, and so the glorot bounds, agree only at multiplier 1.
    """
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    receptive_field = math.prod(layer.kernel_size)
    if layer.groups > 1 and layer.groups == layer.in_channels:
        return receptive_field * layer.in_channels, receptive_field * (layer.out_channels // layer.in_channels)
    return receptive_field * layer.in_channels // layer.groups, receptive_field * layer.out_channels


def keras_defaults(net: nn.Module) -> nn.Module:
    """Give ``net``'s layers Keras' defaults, in place: every Conv2d (depthwise included) and Linear a
    glorot-uniform kernel (bound sqrt(6 / (fan_in + fan_out)), :func:`keras_fans`) and a zero bias; every
    BatchNorm Keras' momentum and epsilon (BN weights start at one and zero in both frameworks).

    A timm model inside ``net`` (a transfer-learning backbone: it carries ``pretrained_cfg``) or a Keras
    application's twin (``keras_application``) is left as it is, with its ImageNet weights and its
    architecture's own BatchNorm settings: only the layers cnnlab adds around it (the new head) get Keras'
    defaults, as a Keras study's new Dense layers did.
    """
    backbones = [m for m in net.modules() if hasattr(m, "pretrained_cfg") or hasattr(m, "keras_application")]
    kept = {id(m) for backbone in backbones for m in backbone.modules()}
    for module in net.modules():
        if id(module) in kept:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = keras_fans(module)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _BatchNorm):
            module.momentum, module.eps = KERAS_BATCHNORM_MOMENTUM, KERAS_BATCHNORM_EPSILON
    return net
