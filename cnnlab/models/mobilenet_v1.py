"""MobileNet v1 as Keras builds it (``keras.applications.MobileNet``), trained from scratch (S2).

S2 used the Keras model on 32x32 CIFAR-10 without showing code; we follow the Keras source at
alpha = 1, depth multiplier 1: a 3x3/2 ConvBlock to 32 channels, 13 depthwise-separable blocks, GAP,
Dropout(1e-3), a dense classifier (Keras' 1x1 conv on the pooled vector, i.e. a Linear layer).
Keras pads stride-2 layers by one row and column at the bottom/right only (TF 'same'); so do we.
``activation`` replaces every ReLU6 (Keras' activation here; None keeps ReLU6). 3,217,226 parameters
at 10 classes: Keras' trainable count (its total adds 21,888 BN moving statistics).
"""

from __future__ import annotations

from torch import nn

from cnnlab.nn.activations import ActivationFactory
from cnnlab.nn.blocks import ConvBlock, FeatureClassifier

# (pointwise output channels, depthwise stride) of the 13 depthwise-separable blocks
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _conv(in_chans: int, out_chans: int, stride: int, activation: ActivationFactory, groups: int = 1) -> nn.Module:
    """3x3 ConvBlock; at stride 2 with Keras' bottom/right-only padding instead of symmetric padding."""
    if stride == 1:
        return ConvBlock(in_chans, out_chans, 3, groups=groups, activation=activation)
    block = ConvBlock(in_chans, out_chans, 3, stride, groups=groups, activation=activation)
    block[0].padding = (0, 0)
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), block)


class MobileNetV1(FeatureClassifier):
    """Keras MobileNet v1 (alpha 1.0) with ``width_mult`` as Keras' alpha and ``drop_rate`` its dropout."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 32,
        activation: ActivationFactory | None = None,
        width_mult: float = 1.0,
        drop_rate: float = 1e-3,
    ) -> None:
        act = activation or nn.ReLU6
        chans = int(32 * width_mult)
        layers: list[nn.Module] = [_conv(in_chans, chans, 2, act)]
        for out, stride in BLOCKS:
            out = int(out * width_mult)
            layers += [_conv(chans, chans, stride, act, groups=chans), ConvBlock(chans, out, 1, activation=act)]
            chans = out
        super().__init__(nn.Sequential(*layers), nn.Linear(chans, num_classes), nn.Dropout(drop_rate))
