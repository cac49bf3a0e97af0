"""Every activation matches its formula and gradient, its YAML builds it, and MobileNetV3 puts it in the HS rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from scipy.special import erf
from torch import nn

import cnnlab.conf
from cnnlab.models.mobilenetv3 import Bottleneck, MobileNetV3
from cnnlab.nn.blocks import SqueezeExcite

ACTIVATION_CONFIGS = sorted((Path(cnnlab.conf.__path__[0]) / "activation").glob("*.yaml"))
# option name -> the class its YAML's _target_ names
ACTIVATIONS = {path.stem: get_class(OmegaConf.load(path)._target_) for path in ACTIVATION_CONFIGS}


def relu6(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 6.0)


# name -> (formula in numpy, the formula's defaults, non-default options, points where the formula changes branch)
FORMULAS = {
    "relu": (lambda x: np.maximum(x, 0.0), {}, {}, [0.0]),
    "hardswish": (lambda x: x * relu6(x + 3.0) / 6.0, {}, {}, [-3.0, 3.0]),
    "gelu": (lambda x: x * 0.5 * (1.0 + erf(x / np.sqrt(2.0))), {}, {}, []),
    "silu": (lambda x: x / (1.0 + np.exp(-x)), {}, {}, []),
    "leaky_relu": (
        lambda x, negative_slope: np.where(x >= 0, x, negative_slope * x),
        {"negative_slope": 0.01},
        {"negative_slope": 0.2},
        [0.0],
    ),
    "elu": (lambda x, alpha: np.where(x > 0, x, alpha * (np.exp(x) - 1.0)), {"alpha": 1.0}, {"alpha": 0.5}, [0.0]),
    "hard_elu": (lambda x, alpha: np.where(x > 0, x, alpha * x / (1.0 - x)), {"alpha": 1.0}, {"alpha": 2.0}, [0.0]),
    "lrelu": (
        lambda x, alpha, beta: np.where(x > 0, beta * x, alpha * x),
        {"alpha": 0.01, "beta": 1.0},
        {"alpha": 0.02, "beta": 0.9},
        [0.0],
    ),
}


def test_every_activation_yaml_has_a_formula():
    assert set(FORMULAS) == set(ACTIVATIONS)


def inputs_around(branch_points: list[float], seed: int = 0) -> np.ndarray:
    """Random values plus exactly 0 and each branch point with neighbours on both sides."""
    edges = [p + d for p in [0.0, *branch_points] for d in (-1e-6, 0.0, 1e-6)]
    return np.concatenate([np.random.default_rng(seed).normal(0.0, 3.0, 200), edges])


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("configured", [False, True], ids=["defaults", "configured"])
def test_activation_matches_formula(name, configured):
    formula, defaults, options, branch_points = FORMULAS[name]
    module = ACTIVATIONS[name](**options) if configured else ACTIVATIONS[name]()
    x = inputs_around(branch_points)

    out = module(torch.from_numpy(x)).numpy()

    np.testing.assert_allclose(out, formula(x, **(options if configured else defaults)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_gradient(name):
    _, _, options, branch_points = FORMULAS[name]
    module = ACTIVATIONS[name](**options)
    x = torch.from_numpy(np.random.default_rng(1).normal(0.0, 3.0, 64))
    for point in [0.0, *branch_points]:  # keep finite differences off the kinks
        too_close = (x - point).abs() < 0.05
        x[too_close] = point + 0.1
    assert torch.autograd.gradcheck(module, (x.requires_grad_(),))


@pytest.mark.parametrize("config", ACTIVATION_CONFIGS, ids=lambda p: p.stem)
def test_yaml_instantiates_a_factory_of_the_registered_class(config):
    cfg = OmegaConf.load(config)
    options = {k: v for k, v in cfg.items() if not str(k).startswith("_")}

    factory = instantiate(cfg)
    first, second = factory(), factory()

    assert type(first) is ACTIVATIONS[config.stem] and first is not second
    for key, value in options.items():
        assert getattr(first, key) == value
        overridden = instantiate(OmegaConf.merge(cfg, {key: value + 0.25}))()
        assert getattr(overridden, key) == pytest.approx(value + 0.25)


# S0's tables: the HS rows (1-based) where MobileNetV3 uses the swappable activation
HS_ROWS = {"small": range(4, 12), "large": range(7, 16)}


@pytest.mark.parametrize("mode", ["small", "large"])
@pytest.mark.parametrize("name", ["gelu", "elu", "lrelu"])
@pytest.mark.parametrize("hybrid", [False, True], ids=["plain", "hybrid"])
def test_mobilenetv3_uses_the_activation_exactly_in_hs_rows(mode, name, hybrid):
    chosen = ACTIVATIONS[name]
    factory = instantiate(OmegaConf.load(Path(cnnlab.conf.__path__[0]) / "activation" / f"{name}.yaml"))
    model = MobileNetV3(10, mode=mode, activation=factory, hybrid=hybrid, img_size=32)
    blocks = [m for m in model.features if isinstance(m, Bottleneck)]

    assert type(model.features[0][-1]) is ACTIVATIONS["hardswish"]  # stem
    for row, block in enumerate(blocks, start=1):
        expected = chosen if row in HS_ROWS[mode] else ACTIVATIONS["relu"]
        expand, depthwise, *middle, project = block.block
        assert type(expand[-1]) is expected and type(depthwise[-1]) is expected
        assert len(project) == 2  # conv + BN, linear bottleneck
        for se in middle:
            assert isinstance(se, SqueezeExcite)
            assert type(se.act) is nn.ReLU and type(se.gate) is nn.Hardsigmoid
    assert type(model.features[-1][-1]) is chosen  # last 1x1 conv
    assert type(model.pre_logits[-1]) is chosen  # 1x1 conv after pooling

    n_chosen = sum(type(m) is chosen for m in model.modules())
    assert n_chosen == 2 * len(HS_ROWS[mode]) + 2  # nowhere else
    assert sum(isinstance(m, nn.Hardswish) for m in model.modules()) == 1  # only the stem keeps hard-swish
