"""The Keras layer lists of the studies' pretrained base models, mapped onto cnnlab's twins of them.

The Keras studies (S1, S3, S4) count layers as entries of ``base_model.layers`` of a ``keras.applications``
model built with ``include_top=False``. There the input, every activation, add, zero-padding, pooling,
dropout, reshape, multiply, rescaling and normalization is a layer of its own, and a conv and its
BatchNorm are two layers. :func:`keras_layers` gives that list for a backbone with a Keras twin,
input end first: each entry names the Keras layer and the backbone modules that own its parameters,
none for a parameter-free layer. tests/reference/keras_layers/ holds the Keras models' own lists; the
tests check names, order and per-layer parameter counts against them.

Twins (timm -> Keras): ``mobilenetv2_100`` -> ``MobileNetV2`` (alpha 1.0; a ``block_<i>_pad`` before every
stride-2 depthwise conv); ``resnet50`` -> ``ResNet50`` (Keras lists a first block's shortcut conv and
its BatchNorm interleaved with the main path's last ones); ``tf_efficientnetv2_b0`` -> ``EfficientNetV2B0``
(Keras' default ``include_preprocessing=True`` adds a Rescaling layer and, for 3 input channels, a
Normalization layer). Every parameter count agrees with Keras except ResNet50's conv biases: Keras' 53
ResNet50 convs have one (26,560 parameters in all), timm's have none (a bias before a BatchNorm is
redundant), so their Keras layers train the kernel only.

The Keras-exact twins (:mod:`cnnlab.models.keras_applications`, marked ``keras_application``) use the same
lists: the MobileNetV2 and EfficientNetV2B0 twins are these timm models, the ResNet50 twin has timm's module
names with Keras' conv biases, so every Keras layer's parameters agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnnlab.nn.init import keras_defaults

# timm architecture -> the keras.applications model it stands in for
KERAS_TWINS = {"mobilenetv2_100": "MobileNetV2", "resnet50": "ResNet50", "tf_efficientnetv2_b0": "EfficientNetV2B0"}
# BatchNormalization momentum in each twin's keras.applications source (the weight of the old moving statistics;
# PyTorch's momentum is 1 minus it); timm builds all three with PyTorch's 0.1, i.e. Keras' 0.9
KERAS_BATCHNORM_MOMENTUM = {"MobileNetV2": 0.999, "ResNet50": 0.99, "EfficientNetV2B0": 0.9}


@dataclass(frozen=True)
class KerasLayer:
    """One entry of a Keras base model's ``layers``: its Keras name and the backbone modules (dotted
    paths) owning its parameters; empty for a layer without parameters."""

    name: str
    modules: tuple[str, ...] = ()


def keras_twin(backbone: nn.Module) -> str | None:
    """The name of the ``keras.applications`` model a backbone stands in for, or None: a Keras-exact twin's
    ``keras_application`` (:mod:`cnnlab.models.keras_applications`), else its timm architecture's twin."""
    if getattr(backbone, "keras_application", None):
        return backbone.keras_application
    pretrained_cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return KERAS_TWINS.get(pretrained_cfg.get("architecture"))


def apply_keras_defaults(net: nn.Module) -> nn.Module:
    """``model.keras_defaults=true``: Keras' layer defaults for the layers cnnlab builds
    (:func:`cnnlab.nn.init.keras_defaults`), and for each backbone with a Keras twin its Keras model's
    BatchNorm momentum, which the BatchNorms a study unfreezes update their moving statistics with. The
    backbone's epsilon stays the one its timm weights were trained with."""
    keras_defaults(net)
    for backbone in net.modules():
        twin = keras_twin(backbone)
        if twin is not None:
            for module in backbone.modules():
                if isinstance(module, _BatchNorm):
                    module.momentum = 1 - KERAS_BATCHNORM_MOMENTUM[twin]
    return net


def keras_layers(backbone: nn.Module) -> list[KerasLayer]:
    """The Keras twin's ``base_model.layers`` (``include_top=False``) as entries over ``backbone``'s modules."""
    twin = keras_twin(backbone)
    if twin is None:
        raise ValueError(f"{type(backbone).__name__} has no Keras twin (known: timm {', '.join(KERAS_TWINS)})")
    return _BUILDERS[twin](backbone)


# A block's Keras layers in order: (Keras name suffix, timm module in the block owning its parameters or None).
BlockLayers = list[tuple[str, Optional[str]]]

MOBILENETV2_BLOCKS: dict[str, BlockLayers] = {
    "DepthwiseSeparableConv": [  # the first block, "expanded_conv": no expansion
        ("depthwise", "conv_dw"),
        ("depthwise_BN", "bn1"),
        ("depthwise_relu", None),
        ("project", "conv_pw"),
        ("project_BN", "bn2"),
    ],
    "InvertedResidual": [
        ("expand", "conv_pw"),
        ("expand_BN", "bn1"),
        ("expand_relu", None),
        ("pad", None),
        ("depthwise", "conv_dw"),
        ("depthwise_BN", "bn2"),
        ("depthwise_relu", None),
        ("project", "conv_pwl"),
        ("project_BN", "bn3"),
    ],
}
EFFICIENTNETV2_BLOCKS: dict[str, BlockLayers] = {
    "ConvBnAct": [("project_conv", "conv"), ("project_bn", "bn1"), ("project_activation", None)],  # fused, no expansion
    "EdgeResidual": [  # fused MBConv
        ("expand_conv", "conv_exp"),
        ("expand_bn", "bn1"),
        ("expand_activation", None),
        ("project_conv", "conv_pwl"),
        ("project_bn", "bn2"),
    ],
    "InvertedResidual": [  # MBConv with squeeze-excitation
        ("expand_conv", "conv_pw"),
        ("expand_bn", "bn1"),
        ("expand_activation", None),
        ("dwconv2", "conv_dw"),
        ("bn", "bn2"),
        ("activation", None),
        ("se_squeeze", None),
        ("se_reshape", None),
        ("se_reduce", "se.conv_reduce"),
        ("se_expand", "se.conv_expand"),
        ("se_excite", None),
        ("project_conv", "conv_pwl"),
        ("project_bn", "bn3"),
    ],
}


def _layer(name: str, *modules: str) -> KerasLayer:
    return KerasLayer(name, modules)


def _block_layers(prefix: str, path: str, layers: BlockLayers) -> list[KerasLayer]:
    return [_layer(prefix + suffix, *([f"{path}.{module}"] if module else [])) for suffix, module in layers]


def _blocks(backbone: nn.Module) -> list[tuple[int, int, str, nn.Module]]:
    """(stage, index in stage, path, block) of a timm EfficientNet-family backbone, input end first."""
    return [
        (s, i, f"blocks.{s}.{i}", block) for s, stage in enumerate(backbone.blocks) for i, block in enumerate(stage)
    ]


def _mobilenetv2(backbone: nn.Module) -> list[KerasLayer]:
    layers = [_layer("input_layer"), _layer("Conv1", "conv_stem"), _layer("bn_Conv1", "bn1"), _layer("Conv1_relu")]
    for number, (_, _, path, block) in enumerate(_blocks(backbone)):
        prefix = f"block_{number}_" if number else "expanded_conv_"
        entries = MOBILENETV2_BLOCKS[type(block).__name__]
        if block.conv_dw.stride[0] == 1:  # Keras pads explicitly before a stride-2 depthwise conv only
            entries = [entry for entry in entries if entry[0] != "pad"]
        layers += _block_layers(prefix, path, entries)
        if block.has_skip:
            layers.append(_layer(f"{prefix}add"))
    return layers + [_layer("Conv_1", "conv_head"), _layer("Conv_1_bn", "bn2"), _layer("out_relu")]


def _resnet50(backbone: nn.Module) -> list[KerasLayer]:
    layers = [
        _layer("input_layer"),
        _layer("conv1_pad"),
        _layer("conv1_conv", "conv1"),
        _layer("conv1_bn", "bn1"),
        _layer("conv1_relu"),
        _layer("pool1_pad"),
        _layer("pool1_pool"),
    ]
    for stage in range(1, 5):
        for index, block in enumerate(getattr(backbone, f"layer{stage}")):
            prefix, path = f"conv{stage + 1}_block{index + 1}_", f"layer{stage}.{index}"
            main = [
                ("1_conv", "conv1"),
                ("1_bn", "bn1"),
                ("1_relu", None),
                ("2_conv", "conv2"),
                ("2_bn", "bn2"),
                ("2_relu", None),
            ]
            if block.downsample is None:
                tail = [("3_conv", "conv3"), ("3_bn", "bn3")]
            else:  # Keras lists the shortcut's conv before the main path's last conv, then both BatchNorms
                tail = [("0_conv", "downsample.0"), ("3_conv", "conv3"), ("0_bn", "downsample.1"), ("3_bn", "bn3")]
            layers += _block_layers(prefix, path, main + tail + [("add", None), ("out", None)])
    return layers


def _efficientnetv2(backbone: nn.Module) -> list[KerasLayer]:
    layers = [_layer("input_layer"), _layer("rescaling")]
    if backbone.conv_stem.in_channels == 3:  # Keras normalizes with ImageNet's mean/std for RGB input only
        layers.append(_layer("normalization"))
    layers += [_layer("stem_conv", "conv_stem"), _layer("stem_bn", "bn1"), _layer("stem_activation")]
    for stage, index, path, block in _blocks(backbone):
        prefix = f"block{stage + 1}{chr(ord('a') + index)}_"
        layers += _block_layers(prefix, path, EFFICIENTNETV2_BLOCKS[type(block).__name__])
        if block.has_skip:  # Keras' stochastic depth is a Dropout layer before the add
            layers += [_layer(f"{prefix}drop"), _layer(f"{prefix}add")]
    return layers + [_layer("top_conv", "conv_head"), _layer("top_bn", "bn2"), _layer("top_activation")]


_BUILDERS: dict[str, Callable[[nn.Module], list[KerasLayer]]] = {
    "MobileNetV2": _mobilenetv2,
    "ResNet50": _resnet50,
    "EfficientNetV2B0": _efficientnetv2,
}
