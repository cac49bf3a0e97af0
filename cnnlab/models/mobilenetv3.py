"""MobileNetV3 small and large, built from scratch to the layer tables of study S0.

The swappable ("deep") activation is the one in the HS rows of the tables: the bottlenecks marked HS,
the last 1x1 conv and the 1x1 conv after pooling. ReLU rows, the squeeze-excite gates (ReLU +
hard-sigmoid) and the stem (hard-swish) stay as the seed builds them.

After the global pooling, S0's 1x1 convs (pre-logits, classifier, hybrid embedding) act on a 1x1 map:
they are ``nn.Linear`` layers here, the same function with the same parameters and initialization.
oneDNN runs a 1x1 conv on a 1x1 map ~9x slower than the matmul in channels-last (a 960->1280 conv took
35 ms of a 330 ms MobileNetV3-large training step on a 2-core CPU, the Linear 4 ms).

Hybrid mode (S0, ``hybrid=True``) adds hand-crafted features computed on the model's input batch:
Sobel-x/y appended to the image (``in_chans + 2`` channels into the stem), and HOG features through
a dense branch Linear(hog_dim, 256) + ReLU + Linear(256, 256) + ReLU (S0: "a separate sequence of
dense layers" to 256; two layers, the first also 256 wide, is our choice). The MobileNet branch ends
in a 256-d embedding: the 1x1
conv that is the classifier in plain mode outputs 256 instead, with no activation (it follows the
HS pre-logits conv, as the classifier does). The two 256-d vectors are concatenated and ``head`` =
Linear(512, num_classes) classifies them. The HOG branch's ReLU is fixed, not the swappable
activation, so ``activation=`` means the same layers in both modes.

S0's Small table (as the MobileNetV3 paper's Table 2) marks SE on the last 1x1 conv (576 channels); the
code S0 shows applies SE only inside its bottlenecks, and the reference implementations (torchvision,
timm) build none there. ``se_last_conv=True`` adds it: an SE block (``se_reduction``) after that conv's
activation, in either mode.

S0 shows no weight initialization; cnnlab uses torchvision's MobileNetV3 recipe (kaiming-normal fan-out
for convs, N(0, 0.01) for linear layers, BatchNorm ones and zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.nn.activations import ActivationFactory, HardSwish, ReLU
from cnnlab.nn.blocks import ConvBlock, SqueezeExcite, make_divisible
from cnnlab.nn.features import HOG, SobelChannels


@dataclass(frozen=True)
class BottleneckSpec:
    """One row of a MobileNetV3 layer table."""

    kernel: int
    expansion: int
    out: int
    se: bool
    deep: bool  # True for HS rows (swappable activation), False for ReLU rows
    stride: int


def _rows(table: list[tuple]) -> list[BottleneckSpec]:
    return [BottleneckSpec(k, e, o, se, act == "HS", s) for k, e, o, se, act, s in table]


# kernel, expansion, out, SE, activation, stride (S0 `_get_config`)
SMALL = _rows(
    [
        (3, 16, 16, True, "RE", 2),
        (3, 72, 24, False, "RE", 2),
        (3, 88, 24, False, "RE", 1),
        (5, 96, 40, True, "HS", 2),
        (5, 240, 40, True, "HS", 1),
        (5, 240, 40, True, "HS", 1),
        (5, 120, 48, True, "HS", 1),
        (5, 144, 48, True, "HS", 1),
        (5, 288, 96, True, "HS", 2),
        (5, 576, 96, True, "HS", 1),
        (5, 576, 96, True, "HS", 1),
    ]
)
LARGE = _rows(
    [
        (3, 16, 16, False, "RE", 1),
        (3, 64, 24, False, "RE", 2),
        (3, 72, 24, False, "RE", 1),
        (5, 72, 40, True, "RE", 2),
        (5, 120, 40, True, "RE", 1),
        (5, 120, 40, True, "RE", 1),
        (3, 240, 80, False, "HS", 2),
        (3, 200, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
        (3, 480, 112, True, "HS", 1),
        (3, 672, 112, True, "HS", 1),
        (5, 672, 160, True, "HS", 2),
        (5, 960, 160, True, "HS", 1),
        (5, 960, 160, True, "HS", 1),
    ]
)
# mode -> (table, last conv channels, pre-classifier width)
CONFIGS = {"small": (SMALL, 576, 1024), "large": (LARGE, 960, 1280)}
HYBRID_BRANCH_WIDTH = 256  # width of each of the two fused embeddings (S0)
HOG_HIDDEN_WIDTH = 256  # the HOG branch's first dense layer (S0 gives no width: our choice)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, optional SE, linear 1x1 projection."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        expansion: int,
        kernel: int,
        stride: int,
        se: bool,
        activation: ActivationFactory,
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_chans == out_chans
        layers: list[nn.Module] = [
            ConvBlock(in_chans, expansion, 1, activation=activation),
            ConvBlock(expansion, expansion, kernel, stride, groups=expansion, activation=activation),
        ]
        if se:
            layers.append(SqueezeExcite(expansion, se_reduction))
        layers.append(ConvBlock(expansion, out_chans, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV3(nn.Module):
    """MobileNetV3 (S0): stem, bottleneck table, last 1x1 conv, pool, 1x1 conv (no BN), classifier.

    ``hybrid=True`` builds S0's Sobel + HOG variant (module docstring); the ``hog_*`` options set
    the HOG (defaults suit 64x64 inputs) and are ignored otherwise. ``drop_rate`` is dropout right
    before ``head`` in both modes. ``se_last_conv=True`` adds the SE block S0's Small table marks on the
    last 1x1 conv (module docstring).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 64,
        activation: ActivationFactory | None = None,
        mode: str = "small",
        width_mult: float = 1.0,
        se_reduction: int = 4,
        drop_rate: float = 0.0,
        hybrid: bool = False,
        hog_orientations: int = 9,
        hog_pixels_per_cell: int = 8,
        hog_cells_per_block: int = 2,
        se_last_conv: bool = False,
    ) -> None:
        super().__init__()
        if mode not in CONFIGS:
            raise ValueError(f"mode must be one of {sorted(CONFIGS)}, got {mode!r}")
        deep_activation = activation or HardSwish
        table, last_conv, pre_classifier = CONFIGS[mode]
        self.img_size = img_size
        self.hybrid = hybrid
        if hybrid:
            self.sobel = SobelChannels()
            in_chans += 2

        stem_chans = make_divisible(16 * width_mult)
        features: list[nn.Module] = [ConvBlock(in_chans, stem_chans, 3, 2, activation=HardSwish)]
        chans = stem_chans
        for row in table:
            out = make_divisible(row.out * width_mult)
            features.append(
                Bottleneck(
                    chans,
                    out,
                    make_divisible(row.expansion * width_mult),
                    row.kernel,
                    row.stride,
                    row.se,
                    deep_activation if row.deep else ReLU,
                    se_reduction,
                )
            )
            chans = out
        last_conv = make_divisible(last_conv * width_mult)
        features.append(ConvBlock(chans, last_conv, 1, activation=deep_activation))
        if se_last_conv:
            features.append(SqueezeExcite(last_conv, se_reduction))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pre_logits = nn.Sequential(nn.Linear(last_conv, pre_classifier), deep_activation())
        self.dropout = nn.Dropout(drop_rate)
        if hybrid:
            self.embedding = nn.Linear(pre_classifier, HYBRID_BRANCH_WIDTH)
            self.hog = HOG(hog_orientations, hog_pixels_per_cell, hog_cells_per_block)
            self.hog_branch = nn.Sequential(
                nn.Linear(self.hog.output_dim(img_size), HOG_HIDDEN_WIDTH),
                nn.ReLU(),
                nn.Linear(HOG_HIDDEN_WIDTH, HYBRID_BRANCH_WIDTH),
                nn.ReLU(),
            )
            self.num_features = 2 * HYBRID_BRANCH_WIDTH
            self.head = nn.Linear(self.num_features, num_classes)
        else:
            self.num_features = pre_classifier
            self.head = nn.Linear(pre_classifier, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # S0's 1x1 convs after pooling keep the convs' initialization (kaiming, fan-out)
        pooled_convs = {self.pre_logits[0], self.embedding if self.hybrid else self.head}
        for module in self.modules():
            if isinstance(module, nn.Conv2d) or module in pooled_convs:
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """What ``head`` classifies (before dropout), (N, num_features): the pre-logits of the pooled
        features, or in hybrid mode the fused MobileNet and HOG embeddings."""
        if not self.hybrid:
            return self.pre_logits(self.pool(self.features(x)).flatten(1))
        mobilenet = self.embedding(self.pre_logits(self.pool(self.features(self.sobel(x))).flatten(1)))
        return torch.cat([mobilenet, self.hog_branch(self.hog(x))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_embedding(x)))
