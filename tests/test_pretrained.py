"""Pretrained timm backbones: the studies' heads, loading weights from a file (the offline route), and
the error that explains that route when a download is impossible."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from omegaconf import OmegaConf
from torch import nn

import cnnlab.conf
from cnnlab.models.pretrained import PretrainedWeightsUnavailable
from cnnlab.training.module import build_network

CONF_MODEL = Path(cnnlab.conf.__path__[0]) / "model"


def build(config: str, num_classes: int = 10, **overrides) -> nn.Module:
    """The network as the CLI builds it from conf/model/<config>.yaml with ``model.net.<key>=<value>`` overrides."""
    net_cfg = OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{config}.yaml").net)
    return build_network({**net_cfg, **overrides}, None, num_classes, 3, 32)


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_weights_path_loads_the_backbone(tmp_path: Path):
    source = timm.create_model("mobilenetv2_100", num_classes=0)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    # pretrained stays true: the file wins, so nothing is downloaded
    net = build("mobilenetv2", weights_path=str(tmp_path / "weights.pth"))
    assert_same_tensors(net.backbone.state_dict(), source.state_dict())
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_weights_path_accepts_a_full_timm_model(tmp_path: Path):
    source = timm.create_model("test_efficientnet", num_classes=1000)  # classifier weights are dropped
    torch.save(source.state_dict(), tmp_path / "full.pth")
    net = build("timm", name="test_efficientnet", weights_path=str(tmp_path / "full.pth"))
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    assert_same_tensors(net.backbone.state_dict(), expected)


@pytest.mark.timeout(60)
def test_download_impossible_explains_weights_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # no cached copy either
    with pytest.raises(Exception) as error:
        build("mobilenetv2")  # the YAML asks for ImageNet weights
    cause = error.value if isinstance(error.value, PretrainedWeightsUnavailable) else error.value.__cause__
    assert isinstance(cause, PretrainedWeightsUnavailable)
    message = str(cause)
    assert message in str(error.value)  # Hydra's wrapper shows it verbatim
    assert "\n" not in message and "'" not in message and '"' not in message  # readable inside Hydra's repr()
    assert "python -m cnnlab.models.pretrained mobilenetv2_100 mobilenetv2_100.pth" in message
    assert "model.net.weights_path=/path/to/mobilenetv2_100.pth" in message
    assert cause.__cause__ is None and cause.__suppress_context__  # no traceback of the failed download


def is_sequence_of(head: nn.Sequential, kinds: list[type[nn.Module]]) -> bool:
    return len(head) == len(kinds) and all(isinstance(m, kind) for m, kind in zip(head, kinds))


def test_study_heads():
    with torch.device("meta"):
        s1 = build("mobilenetv2", num_classes=9, pretrained=False)
        s3 = build("resnet50_pretrained", num_classes=131, pretrained=False)
        s4 = build("efficientnetv2_b0", num_classes=10, pretrained=False)
    assert is_sequence_of(s1.head, [nn.Dropout, nn.Linear]) and s1.head[0].p == 0.5
    assert (s1.head[1].in_features, s1.head[1].out_features) == (1280, 9)
    assert is_sequence_of(s3.head, [nn.Linear]) and (s3.head[0].in_features, s3.head[0].out_features) == (2048, 131)
    assert is_sequence_of(s4.head, [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear])
    assert [s4.head[0].out_features, s4.head[2].p, s4.head[3].out_features] == [512, 0.5, 10]


def test_efficientnetv2_b0_matches_s4_keras_count():
    net = build("efficientnetv2_b0", pretrained=False)
    params = sum(p.numel() for p in net.parameters())
    bn_statistics = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert params + bn_statistics == 6_580_314  # S4 Fig 13, Keras total (BN moving statistics included)
