"""ImageNet-pretrained timm backbones with the new classifier heads of the studies (transfer learning).

The backbone is a timm model without its classifier (``num_classes=0``: it ends in global average
pooling); ``head`` is new: Dropout + Dense(k) (S1, S3), or Dense(hidden) + activation + Dropout +
Dense(k) (S4). Weights come from ``pretrained=True`` (downloaded by timm on a connected machine) or
from ``weights_path`` (a local file of the backbone's state dict: the offline route; it wins over
``pretrained``). ``activation`` replaces the ReLU of the hidden head layer only: the backbone keeps
the nonlinearities its weights were trained with.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from hydra.utils import instantiate
from timm.data import resolve_model_data_config
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.nn.activations import ActivationFactory, ReLU


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights could not be downloaded; the message says how to load them from a file instead."""


def save_backbone_weights(name: str, path: str) -> None:
    """Download timm model ``name``'s ImageNet weights; save its backbone state dict to ``path`` for
    ``weights_path``."""
    torch.save(timm.create_model(name, pretrained=True, num_classes=0).state_dict(), path)


def check_timm_name(name: str) -> None:
    """Raise :class:`ConfigError` naming ``model.net.name`` and the closest timm names when timm has no
    model ``name`` (``hf-hub:`` and other prefixed names are left to timm)."""
    if ":" in name or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models() lists them"
    raise ConfigError(f"model.net.name={name} is not a timm model: {hint}")


def create_backbone(
    name: str, in_chans: int, pretrained: bool, weights_path: str | None, drop_path_rate: float = 0.0
) -> nn.Module:
    """timm model ``name`` without classifier, with ImageNet weights from ``weights_path`` or the hub;
    ``drop_path_rate``: stochastic depth in training (Keras' ``drop_connect_rate`` of EfficientNets)."""
    check_timm_name(name)
    options = {"num_classes": 0, "in_chans": in_chans, "drop_path_rate": drop_path_rate}
    if weights_path is not None:
        backbone = timm.create_model(name, pretrained=False, **options)
        load_backbone_weights(backbone, weights_path)
        return backbone
    try:
        return timm.create_model(name, pretrained=pretrained, **options)
    except OSError:  # hub or URL unreachable (offline, no network): the cause is not the user's to debug
        file = f"{name}.pth"
        # one line without quotes: Hydra shows it inside an InstantiationException as repr()
        raise PretrainedWeightsUnavailable(
            f"cannot download ImageNet weights for timm model {name} (no network?). Use a local file instead: "
            f"on a connected machine run  python -m cnnlab.models.pretrained {name} {file}  then copy {file} "
            f"here and add  model.net.weights_path=/path/to/{file}  to the command"
        ) from None


def without_pretrained_weights(net: dict[str, Any]) -> dict[str, Any]:
    """A model config's ``net`` with its ImageNet-weight switches off (timm's ``pretrained``/``weights_path``,
    the Keras twins' ``weights``): the network to build when its weights come from elsewhere or are not needed."""
    off = {"pretrained": False, "weights_path": None, "weights": None}
    return {**net, **{key: value for key, value in off.items() if key in net}}


def is_pretrained(net: dict[str, Any]) -> bool:
    """Whether a model config's ``net`` loads pretrained weights (whose first layer takes RGB): timm's
    ``pretrained``/``weights_path`` or a Keras twin's ``weights``."""
    return bool(net.get("pretrained") or net.get("weights_path") or net.get("weights"))


def pretrained_normalization(net: dict[str, Any]) -> dict[str, list[float]]:
    """``{"mean", "std"}`` that the ImageNet weights of a model config's ``net`` expect (a Keras twin's
    ``input_normalization``, else timm's data config of its backbone), or ``{}`` for a network without
    pretrained weights. The network is built on the meta device: no weights are loaded or allocated."""
    if not is_pretrained(net):
        return {}
    with torch.device("meta"):
        model = instantiate(without_pretrained_weights(net), num_classes=2)
    own = getattr(model, "input_normalization", None)
    if own is not None:
        return own
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "pretrained_cfg"):
        return {}
    config = resolve_model_data_config(backbone)
    return {"mean": list(config["mean"]), "std": list(config["std"])}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a state dict saved from the same timm model; its classifier weights, if any, are dropped."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    classifier = backbone.pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefixes)})


def classifier_head(
    width: int, num_classes: int, hidden: int | None, drop_rate: float, activation: ActivationFactory | None
) -> nn.Sequential:
    """A transfer-learning study's new head on ``width`` pooled features: [Dense(hidden), activation (ReLU)]
    + Dropout(drop_rate) + Dense(k)."""
    layers: list[nn.Module] = []
    if hidden:
        layers += [nn.Linear(width, hidden), (activation or ReLU)()]
        width = hidden
    if drop_rate:
        layers.append(nn.Dropout(drop_rate))
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


class BackboneClassifier(nn.Module):
    """A backbone ending in pooled features, then ``head``: the shape of every transfer-learning model."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class TimmClassifier(BackboneClassifier):
    """A timm backbone (``name``, with stochastic depth ``drop_path_rate``) plus a new head: [Dense(hidden),
    activation] + Dropout(drop_rate) + Dense(k)."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int = 224,
        activation: ActivationFactory | None = None,
        name: str = "resnet50",
        pretrained: bool = True,
        weights_path: str | None = None,
        hidden: int | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        backbone = create_backbone(name, in_chans, pretrained, weights_path, drop_path_rate)
        # the pooled features' width: after a head conv (MobileNetV3) that is not num_features
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        super().__init__(backbone, classifier_head(width, num_classes, hidden, drop_rate, activation))


def mobilenetv2(**kwargs) -> TimmClassifier:
    """S1: MobileNetV2 (timm mobilenetv2_100), head Dropout(0.5) + Dense(k)."""
    return TimmClassifier(**{"name": "mobilenetv2_100", "drop_rate": 0.5, **kwargs})


def resnet50_pretrained(**kwargs) -> TimmClassifier:
    """S3, S4: ResNet-50 (timm resnet50), head GAP + Dense(k)."""
    return TimmClassifier(**{"name": "resnet50", **kwargs})


def efficientnetv2_b0(**kwargs) -> TimmClassifier:
    """S4: EfficientNetV2-B0 (timm tf_efficientnetv2_b0, the Keras weights), head GAP, Dense(512, ReLU),
    Dropout(0.5), Dense(k); stochastic depth 0.2 as Keras' EfficientNetV2B0 (``drop_connect_rate``)."""
    return TimmClassifier(
        **{"name": "tf_efficientnetv2_b0", "hidden": 512, "drop_rate": 0.5, "drop_path_rate": 0.2, **kwargs}
    )


if __name__ == "__main__":  # python -m cnnlab.models.pretrained TIMM_NAME FILE
    import sys

    save_backbone_weights(*sys.argv[1:3])
