"""From-scratch ResNets: S2's small CIFAR "ResNet-18" and the ResNet-50 of S3/S4.

``activation`` replaces every ReLU, as S3 does with LReLU (None keeps ReLU).
"""

from __future__ import annotations

from torch import nn

from cnnlab.nn.activations import ActivationFactory, ReLU
from cnnlab.nn.blocks import ConvBlock, FeatureClassifier, Residual, basic_residual_block


class ResNet18S2(FeatureClassifier):
    """S2's code (sec. 8): Conv64 3x3 + BN + ReLU; 2 residual blocks at 64; Conv128 2x2 stride 2;
    2 blocks at 128; Conv256 2x2 stride 2; 2 blocks at 256; GAP; Dense(k).

    A residual block is conv3x3-BN-ReLU-conv3x3-BN, identity add, ReLU. The 2x2 downsampling convs keep
    their bias and have no BN or activation, as in S2. Convs followed by BN drop the (redundant) bias.
    Keras 'same' padding of the 2x2 stride-2 convs is none for even sizes, as here; at odd sizes
    (100 -> 50 -> 25) Keras pads one extra row/column and we floor instead (25 -> 12, not 13).
    """

    def __init__(
        self, num_classes: int, in_chans: int = 3, img_size: int = 32, activation: ActivationFactory | None = None
    ) -> None:
        act = activation or ReLU
        layers: list[nn.Module] = [ConvBlock(in_chans, 64, 3, activation=act)]
        chans = 64
        for width in (64, 128, 256):
            if width != chans:
                layers.append(nn.Conv2d(chans, width, 2, stride=2))
            layers += [basic_residual_block(width, width, act) for _ in range(2)]
            chans = width
        super().__init__(nn.Sequential(*layers), nn.Linear(chans, num_classes))


def bottleneck_block(in_chans: int, mid_chans: int, stride: int, activation: ActivationFactory) -> Residual:
    """ResNet-50 bottleneck: 1x1 reduce, 3x3 (carries the stride), 1x1 expand to 4x, projection shortcut
    (1x1 conv + BN) when the shape changes."""
    out_chans = 4 * mid_chans
    body = nn.Sequential(
        ConvBlock(in_chans, mid_chans, 1, activation=activation),
        ConvBlock(mid_chans, mid_chans, 3, stride, activation=activation),
        ConvBlock(mid_chans, out_chans, 1),
    )
    needs_projection = stride != 1 or in_chans != out_chans
    shortcut = ConvBlock(in_chans, out_chans, 1, stride) if needs_projection else nn.Identity()
    return Residual(body, shortcut, activation)


class ResNet50(FeatureClassifier):
    """ResNet-50 from scratch (S3, S4): 7x7/2 stem, 3x3/2 max-pool, bottleneck stages [3, 4, 6, 3] at
    widths 64-128-256-512 (x4 out), GAP, Dense(k).

    S3 only says "regular ResNet50" with Conv2D-BN-ReLU blocks; we build the torchvision/timm layout
    (stride on the 3x3 conv, no conv bias before BN: 25,557,032 parameters at 1000 classes), the same
    network as ``resnet50_pretrained``, so from-scratch and transfer runs differ only in initialization.
    """

    def __init__(
        self, num_classes: int, in_chans: int = 3, img_size: int = 224, activation: ActivationFactory | None = None
    ) -> None:
        act = activation or ReLU
        layers: list[nn.Module] = [ConvBlock(in_chans, 64, 7, 2, activation=act), nn.MaxPool2d(3, 2, 1)]
        chans = 64
        for stage, (mid, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(bottleneck_block(chans, mid, stride, act))
                chans = 4 * mid
        super().__init__(nn.Sequential(*layers), nn.Linear(chans, num_classes))
