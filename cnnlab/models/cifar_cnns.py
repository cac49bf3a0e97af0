"""The small from-scratch CNNs of studies S2 and S4 (CIFAR-10), and S2's AlexNet.

In all of them ``activation`` replaces every ReLU (None keeps ReLU). Keras layer names map as:
Conv2D -> ``nn.Conv2d`` (with bias) where the study has no BatchNorm, ``ConvBlock`` (conv without bias
+ BN, the bias being redundant under BN) where it has one; Dense -> ``nn.Linear``. Sizes after a
Flatten follow ``img_size``, so the models run at any input size, not only 32x32.
"""

from __future__ import annotations

from torch import nn

from cnnlab.nn.activations import ActivationFactory, ReLU
from cnnlab.nn.blocks import ConvBlock, FeatureClassifier, basic_residual_block, flattened_size


def _conv_relu_pool(in_chans: int, widths: list[int], act: ActivationFactory, padding: int) -> list[nn.Module]:
    """Conv 3x3 (with bias) + activation + 2x2 max-pool for each width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_chans, width, 3, padding=padding), act(), nn.MaxPool2d(2)]
        in_chans = width
    return layers


class CNNBaselineS2(FeatureClassifier):
    """S2 base CNN: Conv(32,3x3,valid) MaxPool Conv(64,3x3,valid) MaxPool Flatten Dense(128) Dense(k).

    315,722 parameters at 32x32x3 with 10 classes (S2 prints no count).
    """

    def __init__(
        self, num_classes: int, in_chans: int = 3, img_size: int = 32, activation: ActivationFactory | None = None
    ) -> None:
        act = activation or ReLU
        features = nn.Sequential(*_conv_relu_pool(in_chans, [32, 64], act, padding=0))
        dense = nn.Sequential(nn.Linear(flattened_size(features, in_chans, img_size), 128), act())
        super().__init__(features, nn.Linear(128, num_classes), dense, global_pool=False)


class CNNBaselineS4(FeatureClassifier):
    """S4 baseline (Table 1): Conv32 MaxPool Conv64 MaxPool Conv128 (3x3 valid, ReLU) Flatten Dropout
    Dense(128, ReLU) Dense(k): 356,810 parameters at 32x32x3, 10 classes, as Table 1.

    The dropout rate is not reported; 0.5 is our choice.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 32,
        activation: ActivationFactory | None = None,
        dropout: float = 0.5,
    ) -> None:
        act = activation or ReLU
        features = nn.Sequential(
            *_conv_relu_pool(in_chans, [32, 64], act, padding=0),
            nn.Conv2d(64, 128, 3),
            act(),
        )
        dense = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(flattened_size(features, in_chans, img_size), 128),
            act(),
        )
        super().__init__(features, nn.Linear(128, num_classes), dense, global_pool=False)


class AlexNetCIFAR(FeatureClassifier):
    """S2 AlexNet for 32x32: Conv96 Pool Conv256 Pool Conv384 Conv384 Conv256 Pool (3x3 'same', ReLU)
    Flatten Dense(dense1) Dropout(dropout1) Dense(dense2) Dropout(dropout2) Dense(k).

    Defaults are S2's base model (4096, 0.5, 4096, 0.5); its Hyperband search varies the four options
    (best: 4096, 0.5, 2048, 0.6). The Flatten keeps Keras' semantics, so Dense(dense1) grows with
    ``img_size`` (16x16x256 inputs at 128x128).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 32,
        activation: ActivationFactory | None = None,
        dense1: int = 4096,
        dropout1: float = 0.5,
        dense2: int = 4096,
        dropout2: float = 0.5,
    ) -> None:
        act = activation or ReLU
        features = nn.Sequential(
            *_conv_relu_pool(in_chans, [96, 256], act, padding=1),
            nn.Conv2d(256, 384, 3, padding=1),
            act(),
            nn.Conv2d(384, 384, 3, padding=1),
            act(),
            *_conv_relu_pool(384, [256], act, padding=1),
        )
        dense = nn.Sequential(
            nn.Linear(flattened_size(features, in_chans, img_size), dense1),
            act(),
            nn.Dropout(dropout1),
            nn.Linear(dense1, dense2),
            act(),
            nn.Dropout(dropout2),
        )
        super().__init__(features, nn.Linear(dense2, num_classes), dense, global_pool=False)


def _mlp(in_features: int, width: int, act: ActivationFactory, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, width), act(), nn.Dropout(dropout))


class CNNImprovedS4(FeatureClassifier):
    """S4 improved CNN: 6 conv layers in 3 blocks (32, 64, 128 filters), BN after each conv, max-pool and
    dropout after each block, global average pooling, Dense(256), Dropout, Dense(k).

    S4 shows this model only as a figure; our reading of its bullet list: each block is two 3x3 'same'
    ConvBlocks (conv + BN + ReLU), MaxPool 2x2, Dropout(``block_dropout``); the head dropout is
    ``dropout``. Neither rate is reported (0.25 and 0.5 are our choice), nor is a parameter count.

    S4 contradicts itself on skip connections: sec. 1, 3.3 and 5.1 call this the skip-connection model,
    Table 7's "Skip Connections" row gives it "BatchNorm + Deeper Layers". ``skip=True`` builds the other
    reading: each block's two convs are a residual block (the second ConvBlock without its activation, a
    1x1 conv + BN projection shortcut, the activation after the sum): 10,784 more parameters.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 32,
        activation: ActivationFactory | None = None,
        block_dropout: float = 0.25,
        dropout: float = 0.5,
        skip: bool = False,
    ) -> None:
        act = activation or ReLU
        layers: list[nn.Module] = []
        for width in (32, 64, 128):
            if skip:
                layers.append(basic_residual_block(in_chans, width, act))
            else:
                layers += [ConvBlock(in_chans, width, 3, activation=act), ConvBlock(width, width, 3, activation=act)]
            layers += [nn.MaxPool2d(2), nn.Dropout(block_dropout)]
            in_chans = width
        super().__init__(nn.Sequential(*layers), nn.Linear(256, num_classes), _mlp(128, 256, act, dropout))


class CNNResidualS4(FeatureClassifier):
    """S4 advanced CNN ("CNN 89", 1,368,778 parameters): residual ConvBlocks, max-pooling and global
    average pooling, BN, dropout, Dense(512).

    S4 gives no layer table, so we took the reading of its description whose Keras parameter count is
    exactly 1,368,778: ConvBlock(64) stem; residual blocks at 64, 128 and 256 filters, each two 3x3
    ConvBlocks plus a 1x1 conv + BN projection shortcut (Keras ResNet's "conv block", used even at
    64 -> 64); MaxPool 2x2 + Dropout(``block_dropout``) after the first two blocks; GAP; Dense(512);
    Dropout(``dropout``); Dense(k). Keras counts BN moving statistics as (non-trainable) parameters,
    so PyTorch reports 1,365,962 parameters plus 2,816 BN running-stat entries. Dropout rates are not
    reported (0.25 and 0.5 are our choice).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 32,
        activation: ActivationFactory | None = None,
        block_dropout: float = 0.25,
        dropout: float = 0.5,
    ) -> None:
        act = activation or ReLU
        features = nn.Sequential(
            ConvBlock(in_chans, 64, 3, activation=act),
            basic_residual_block(64, 64, act, project=True),
            nn.MaxPool2d(2),
            nn.Dropout(block_dropout),
            basic_residual_block(64, 128, act),
            nn.MaxPool2d(2),
            nn.Dropout(block_dropout),
            basic_residual_block(128, 256, act),
        )
        super().__init__(features, nn.Linear(512, num_classes), _mlp(256, 512, act, dropout))
