"""``model.keras_defaults``: Keras' initialization and BatchNorm settings, checked against numbers Keras 3.15.1
(jax backend) computed for the same layers and models (recorded here: the suite does not need Keras)."""

from __future__ import annotations

import math

import pytest
import torch
from fakedata import write_cifar10
from test_experiments import composed
from test_models_zoo import build
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnnlab.inference import load_classifier
from cnnlab.models.pretrained import TimmClassifier
from cnnlab.nn.depthwise import DepthwiseConv2d
from cnnlab.nn.init import keras_defaults, keras_fans

# layer -> Keras' compute_fans of the equivalent Keras layer's kernel, and the variance of the kernel Keras drew
KERAS_LAYERS = {
    "Conv2D(32, 3) on 3 channels": (lambda: nn.Conv2d(3, 32, 3), (27, 288), 6.3237e-3),
    "Conv2D(64, 3, groups=4) on 32": (lambda: nn.Conv2d(32, 64, 3, groups=4), (72, 576), 3.0188e-3),
    "DepthwiseConv2D(3) on 32": (lambda: DepthwiseConv2d(32, 3), (288, 9), 6.8222e-3),
    "DepthwiseConv2D(5, depth_multiplier=2) on 16": (lambda: nn.Conv2d(16, 32, 5, groups=16), (400, 50), 4.4112e-3),
    "Dense(128) on 2048": (lambda: nn.Linear(2048, 128), (2048, 128), 9.2219e-4),
}
# keras.applications.MobileNet(input_shape=(32, 32, 3), weights=None, classes=10): fans of every kernel in order
# (stem, then depthwise and pointwise of each of the 13 blocks, then the 1x1 classifier conv)
_DEPTHWISE = [(288, 9), (576, 9), (1152, 9), (1152, 9), (2304, 9), (2304, 9)] + [(4608, 9)] * 6 + [(9216, 9)]
_POINTWISE = (
    [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)]
    + [(512, 512)] * 5
    + [(512, 1024), (1024, 1024)]
)
KERAS_MOBILENET_FANS = [(27, 288), *(f for pair in zip(_DEPTHWISE, _POINTWISE) for f in pair), (1024, 10)]
# S4's baseline as a Keras Sequential (Conv2D 32, 64, 128 valid; Flatten; Dense 128; Dense 10): 356,810 parameters
KERAS_S4_BASELINE_FANS = [(27, 288), (288, 576), (576, 1152), (2048, 128), (128, 10)]
KERAS_BATCHNORM = {"momentum": 0.99, "epsilon": 1e-3}


def kernels(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("name", KERAS_LAYERS)
def test_layers_get_keras_fans_and_glorot_uniform_kernels(name):
    make, fans, keras_variance = KERAS_LAYERS[name]
    torch.manual_seed(0)
    layer = make()
    assert keras_fans(layer) == fans
    keras_defaults(layer)
    bound = math.sqrt(6 / sum(fans))
    weights = layer.weight.detach()
    assert weights.abs().max() <= bound and weights.abs().max() > 0.98 * bound
    # a uniform draw's variance estimate is off by sqrt(0.8 / n) relative: 5 of those from Keras' own draw
    assert weights.var().item() == pytest.approx(keras_variance, rel=5 * math.sqrt(0.8 / weights.numel()))
    assert layer.bias is None or not layer.bias.any()


def test_depthwise_multiplier_fans_differ_from_torch_xavier():
    """What keras_fans is for: torch's xavier bound for this layer is sqrt(6 / (25 + 800)), Keras' wider."""
    layer = keras_defaults(nn.Conv2d(16, 32, 5, groups=16))
    assert layer.weight.abs().max() > 1.2 * math.sqrt(6 / (25 + 800))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("mobilenet_v1", KERAS_MOBILENET_FANS),
        ("cnn_baseline_s4", KERAS_S4_BASELINE_FANS),
    ],
)
def test_models_get_the_fans_keras_gives_the_same_model(model, expected):
    net = keras_defaults(build(model))
    assert [keras_fans(layer) for layer in kernels(net)] == expected
    for layer in kernels(net):
        assert layer.weight.abs().max() <= math.sqrt(6 / sum(keras_fans(layer)))


def test_batchnorm_gets_keras_momentum_and_epsilon():
    net = keras_defaults(build("cnn_residual_s4"))
    norms = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.momentum == pytest.approx(1 - KERAS_BATCHNORM["momentum"]) for m in norms)
    assert {m.eps for m in norms} == {KERAS_BATCHNORM["epsilon"]}
    norm = norms[0].train()  # PyTorch's momentum is the new batch's weight: Keras' 0.99 keeps 0.99 of the old
    batch = torch.randn(8, norm.num_features, 4, 4) + 5
    norm(batch)
    assert torch.allclose(norm.running_mean, 0.01 * batch.mean((0, 2, 3)), atol=1e-6)


def test_a_timm_backbone_keeps_its_weights_and_only_the_new_head_changes():
    torch.manual_seed(0)
    net = TimmClassifier(10, name="test_efficientnet", pretrained=False, hidden=64)
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    eps = {m.eps for m in net.backbone.modules() if isinstance(m, _BatchNorm)}
    keras_defaults(net)
    assert all(torch.equal(v, before[k]) for k, v in net.backbone.state_dict().items())
    assert {m.eps for m in net.backbone.modules() if isinstance(m, _BatchNorm)} == eps
    hidden, out = kernels(net.head)
    assert keras_fans(hidden) == (net.backbone.num_features, 64) and not hidden.bias.any() and not out.bias.any()
    assert out.weight.abs().max() <= math.sqrt(6 / (64 + 10))


KERAS_FROM_SCRATCH = [
    "s2_cnn_cifar10",
    "s2_alexnet_cifar10",
    "s2_resnet18_tuned_cifar10",
    "s2_mobilenet_tuned_cifar10",
    "s4_cnn_baseline_cifar10",
    "s4_cnn_improved_cifar10",
    "s4_cnn_residual_cifar10",
]


@pytest.mark.parametrize("experiment", KERAS_FROM_SCRATCH)
def test_keras_studies_from_scratch_use_keras_defaults(experiment):
    cfg = composed(f"experiment={experiment}")
    assert cfg.model.keras_defaults is True and cfg.optim.eps == 1e-7


def test_s0_keeps_pytorch_defaults():
    cfg = composed("experiment=s0_mobilenetv3_eurosat")
    assert cfg.model.keras_defaults is False and "eps" not in cfg.optim


def test_trained_checkpoint_reloads_with_keras_batchnorm(cnnlab):
    """The CLI path: a Keras study's run, then its checkpoint rebuilt for inference with Keras' BN epsilon."""
    write_cifar10(cnnlab.cwd / "data")
    cnnlab("experiment=s4_cnn_improved_cifar10", "debug=smoke", "test=false", f"paths.data_dir={cnnlab.cwd / 'data'}")
    (checkpoint,) = (cnnlab.cwd / "outputs").rglob("best.ckpt")
    module = load_classifier(checkpoint)
    norms = [m for m in module.net.modules() if isinstance(m, _BatchNorm)]
    assert module.hparams.model["keras_defaults"] is True
    assert len(norms) == 6 and {(m.momentum, m.eps) for m in norms} == {(0.01, 1e-3)}


@pytest.mark.parametrize(
    ("builder", "keras_momentum"), [("mobilenetv2", 0.999), ("resnet50_pretrained", 0.99), ("efficientnetv2_b0", 0.9)]
)
def test_a_pretrained_base_keeps_its_weights_and_takes_its_keras_models_batchnorm_momentum(builder, keras_momentum):
    import cnnlab.models.pretrained as pretrained
    from cnnlab.models.keras_layers import apply_keras_defaults

    torch.manual_seed(0)
    net = getattr(pretrained, builder)(num_classes=10, pretrained=False)
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    apply_keras_defaults(net)
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in before.items())  # weights untouched
    norms = [m for m in net.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == pytest.approx(1 - keras_momentum) for m in norms)
    head = net.head[-1]
    assert torch.count_nonzero(head.bias) == 0 and head.weight.abs().max() <= (6 / (head.in_features + 10)) ** 0.5
