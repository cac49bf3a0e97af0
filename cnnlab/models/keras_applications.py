"""Keras-exact twins of the ``keras.applications`` base models the Keras studies fine-tuned (S1, S3, S4).

``KerasApplication`` is a twin of ``keras.applications.<application>(include_top=False, pooling="avg")``
with a new head, and loads that application's own ImageNet weight file (``weights="keras"``,
:mod:`cnnlab.models.keras_weights`). Each twin computes what the Keras model computes, layer for layer:

- ``ResNet50``: :class:`ResNet50V1`, written here. Keras' ResNet50 is ResNet v1 (stride on the first 1x1
  conv of a stage's first block, a bias on every conv, BatchNorm epsilon 1.001e-5, explicit zero padding
  before the 7x7 stem conv and the max-pool), where torchvision and timm build v1.5.
- ``MobileNetV2``: timm's ``mobilenetv2_100`` built with TF "same" padding (``pad_type="same"``: the extra
  row and column go bottom and right, as Keras' ``correct_pad`` + ZeroPadding2D before each stride-2
  depthwise conv and its "same" stride-2 stem) and Keras' BatchNorm epsilon 1e-3 and momentum 0.999.
- ``EfficientNetV2B0``: timm's ``tf_efficientnetv2_b0`` (ported from the same TF code: "same" padding,
  epsilon 1e-3, momentum 0.9). Keras' model starts with Rescaling(1/255) and Normalization (ImageNet's
  mean and variance) layers (``include_preprocessing=True``); the twin leaves them to cnnlab's input
  normalization (``input_normalization``: the same mean and std), and still counts them as Keras layers.

tests/test_keras_twins.py checks each twin against the live Keras model with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.keras_layers import KERAS_BATCHNORM_MOMENTUM
from cnnlab.models.keras_weights import KERAS_WEIGHTS, keras_weights_file, load_keras_weights
from cnnlab.models.pretrained import BackboneClassifier, classifier_head
from cnnlab.nn.activations import ActivationFactory, ReLU

RESNET50_BN_EPSILON = 1.001e-5  # keras.applications.resnet: BatchNormalization(epsilon=1.001e-5)


class BottleneckV1(nn.Module):
    """Keras' ``block1``: 1x1 conv (carries the stride) - 3x3 conv - 1x1 conv to 4x, each conv with a bias and
    a BatchNorm; a 1x1 conv + BatchNorm shortcut when ``downsample``. Attribute names follow timm's
    Bottleneck, so the Keras layer list (:mod:`cnnlab.models.keras_layers`) maps onto both."""

    def __init__(
        self, in_chans: int, filters: int, stride: int, downsample: bool, activation: ActivationFactory, eps: float
    ) -> None:
        super().__init__()
        out_chans = 4 * filters
        self.conv1 = nn.Conv2d(in_chans, filters, 1, stride)
        self.bn1 = nn.BatchNorm2d(filters, eps)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(filters, filters, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(filters, eps)
        self.act2 = activation()
        self.conv3 = nn.Conv2d(filters, out_chans, 1)
        self.bn3 = nn.BatchNorm2d(out_chans, eps)
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, stride), nn.BatchNorm2d(out_chans, eps))
            if downsample
            else None
        )
        self.act3 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.act3(self.bn3(self.conv3(x)) + shortcut)


class ResNet50V1(nn.Module):
    """``keras.applications.ResNet50(include_top=False, pooling="avg")``: ZeroPadding(3), 7x7/2 conv,
    BatchNorm, ReLU, ZeroPadding(1), 3x3/2 max-pool, stages of [3, 4, 6, 3] v1 bottlenecks at widths 64-512
    (stride 1, 2, 2, 2 on each stage's first 1x1 conv), global average pooling: 2048 features.

    ``activation`` replaces every ReLU (None keeps ReLU); ``eps`` is the BatchNorm epsilon (Keras' 1.001e-5).
    """

    num_features = 2048

    def __init__(
        self, in_chans: int = 3, activation: ActivationFactory | None = None, eps: float = RESNET50_BN_EPSILON
    ) -> None:
        super().__init__()
        act = activation or ReLU
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2)
        self.bn1 = nn.BatchNorm2d(64, eps)
        self.act1 = act()
        self.maxpool = nn.MaxPool2d(3, 2)
        chans = 64
        for stage, (filters, blocks, stride) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2))):
            layer = [BottleneckV1(chans, filters, stride, True, act, eps)]
            layer += [BottleneckV1(4 * filters, filters, 1, False, act, eps) for _ in range(blocks - 1)]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
            chans = 4 * filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(F.pad(x, (3, 3, 3, 3)))))
        # Keras pads with zeros before its "valid" max-pool; after the ReLU that equals PyTorch's -inf padding
        # only for nonnegative inputs, so pad explicitly (an activation such as LReLU can be negative)
        x = self.maxpool(F.pad(x, (1, 1, 1, 1)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))


def keras_backbone(application: str, in_chans: int, drop_path_rate: float = 0.0) -> nn.Module:
    """The twin of Keras base model ``application`` (a key of :data:`KERAS_WEIGHTS`) with random weights; it
    ends in global average pooling and carries ``keras_application``, the Keras model it stands for."""
    if application not in KERAS_WEIGHTS:
        raise ConfigError(
            f"model.net.application={application} has no Keras twin: use one of {', '.join(KERAS_WEIGHTS)}"
        )
    momentum = 1 - KERAS_BATCHNORM_MOMENTUM[application]  # PyTorch's momentum weighs the new batch
    if application == "ResNet50":
        backbone = ResNet50V1(in_chans)
    elif application == "MobileNetV2":  # alpha 1.0
        backbone = timm.create_model("mobilenetv2_100", num_classes=0, in_chans=in_chans, pad_type="same", bn_eps=1e-3)
    else:  # EfficientNetV2B0
        backbone = timm.create_model(
            "tf_efficientnetv2_b0", num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate
        )
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    backbone.keras_application = application
    return backbone


@dataclass(frozen=True)
class KerasPreprocessing:
    """What ``keras.applications.<model>.preprocess_input`` (or the model's own preprocessing layers) does to
    an image, as the mean and std cnnlab normalizes its [0, 1] inputs with; ``bgr``: Keras' weights expect
    BGR channel order (Caffe-style ResNet50), which the twin's first conv takes over, so inputs stay RGB."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False


PREPROCESSING = {
    # "caffe" mode: BGR, minus the ImageNet mean in 0..255 units, no scaling
    "ResNet50": KerasPreprocessing((123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255, 1 / 255, 1 / 255), bgr=True),
    "MobileNetV2": KerasPreprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # "tf" mode: x / 127.5 - 1
    # the model's Rescaling(1/255) + Normalization(ImageNet mean, variance std**2) layers
    "EfficientNetV2B0": KerasPreprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class KerasApplication(BackboneClassifier):
    """A ``keras.applications`` base model's twin (``application``: ResNet50, MobileNetV2 or
    EfficientNetV2B0) plus a new head: [Dense(hidden), activation] + Dropout(drop_rate) + Dense(k).

    ``weights="keras"`` loads Keras' own ImageNet weights from ``weights_file`` (default: where Keras caches
    them, ``~/.keras/models/<file>``); ``None`` leaves them random. ``activation`` replaces the ReLU of the
    hidden head layer only: the backbone keeps the nonlinearities its weights were trained with.
    ``drop_path_rate``: EfficientNetV2B0's stochastic depth (Keras' ``drop_connect_rate``).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 224,
        activation: ActivationFactory | None = None,
        application: str = "ResNet50",
        weights: str | None = "keras",
        weights_file: str | None = None,
        hidden: int | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        if weights not in ("keras", None):
            raise ConfigError(f"model.net.weights={weights} is not known: use keras (Keras' ImageNet weights) or null")
        backbone = keras_backbone(application, in_chans, drop_path_rate)
        super().__init__(backbone, classifier_head(backbone.num_features, num_classes, hidden, drop_rate, activation))
        self.preprocessing = PREPROCESSING[application]
        if weights == "keras":
            if in_chans != 3:
                raise ConfigError(
                    f"model.net.weights=keras needs RGB input (Keras' {application} weights): in_chans={in_chans}"
                )
            load_keras_weights(
                backbone, keras_weights_file(application, weights_file, img_size), self.preprocessing.bgr
            )

    @property
    def input_normalization(self) -> dict[str, list[float]]:
        """The mean and std of Keras' preprocessing for this application, for inputs in [0, 1]."""
        return {"mean": list(self.preprocessing.mean), "std": list(self.preprocessing.std)}


class ResNet50Keras(BackboneClassifier):
    """ResNet-50 from scratch in Keras' layout (:class:`ResNet50V1`: ResNet v1, conv biases) with a Dense(k)
    head: S3's "regular ResNet50" built layer by layer in Keras. ``activation`` replaces every ReLU, as S3
    does with LReLU (None keeps ReLU). With ``model.keras_defaults=true`` its layers get Keras' defaults,
    BatchNorm epsilon 1e-3 included (a layer-by-layer build; ``keras.applications.ResNet50`` uses 1.001e-5).
    """

    def __init__(
        self, num_classes: int, in_chans: int = 3, img_size: int = 224, activation: ActivationFactory | None = None
    ) -> None:
        super().__init__(ResNet50V1(in_chans, activation), nn.Linear(ResNet50V1.num_features, num_classes))
