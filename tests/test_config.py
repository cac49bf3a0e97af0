"""Every option of every config group composes, and its model and data instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import weights_off
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

import cnnlab.conf
from cnnlab.train import build_datamodule
from cnnlab.training.module import ImageClassifier

CONF_DIR = Path(cnnlab.conf.__path__[0])
# groups in train.yaml's defaults list are chosen as `group=option`, others are added as `+group=option`
DEFAULT_GROUPS = {
    next(iter(entry)).split("@")[0]
    for entry in yaml.safe_load((CONF_DIR / "train.yaml").read_text())["defaults"]
    if isinstance(entry, dict)
}
SKIP_GROUPS = {"hydra"}  # composed through Hydra itself, covered by the CLI tests
BASE_GROUPS = {"data/base"}  # shared keys every data config includes, not options of their own


def group_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file below conf/, nested groups included."""
    options = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != "." and group.split("/")[0] not in SKIP_GROUPS and group not in BASE_GROUPS:
            options.append((group, path.stem))
    return options


def compose_with(*overrides: str):
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/cnnlab-compose", *overrides])


def test_all_groups_exist():
    groups = {g.split("/")[0] for g, _ in group_options()}
    expected = {
        "model",
        "activation",
        "data",
        "optim",
        "scheduler",
        "freeze",
        "trainer",
        "callbacks",
        "logger",
        "paths",
        "debug",
    }
    assert expected <= groups, expected - groups


@pytest.mark.parametrize(("group", "option"), group_options(), ids=lambda v: str(v))
def test_option_composes(group: str, option: str):
    prefix = "" if group.split("/")[0] in DEFAULT_GROUPS else "+"
    cfg = compose_with(f"{prefix}{group}={option}")
    assert cfg.seed == 42
    assert "_target_" in cfg.trainer
    if group == "model":
        off = weights_off(cfg.model.net)
        if off:
            cfg = compose_with(f"{prefix}{group}={option}", *off)
        module = ImageClassifier(
            model=to_dict(cfg.model),
            activation=to_dict(cfg.get("activation")),
            optimizer=to_dict(cfg.optim),
            num_classes=10,
            in_chans=3,
            img_size=cfg.data.img_size,
        )
        assert sum(p.numel() for p in module.net.parameters()) > 0
        assert module.configure_optimizers() is not None
    if group.split("/")[0] == "data":
        assert build_datamodule(cfg).batch_size > 0
    if group in {"optim", "scheduler", "activation"} and cfg[group].get("_target_"):
        assert callable(instantiate(cfg[group]))


def to_dict(node):
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def test_optim_and_batch_size_override_paths():
    cfg = compose_with("optim=sgd", "optim.lr=0.05", "data.batch_size=16", "scheduler=cosine")
    assert cfg.optim.lr == 0.05 and cfg.optim.momentum == 0.9
    assert cfg.data.batch_size == 16
    assert cfg.scheduler.T_max == cfg.trainer.max_epochs


def test_every_data_config_includes_the_shared_keys():
    for path in sorted((CONF_DIR / "data").glob("*.yaml")):
        cfg = compose_with(f"data={path.stem}").data
        assert {"root", "eval_batch_size", "num_workers", "seed", "mean", "std"} <= cfg.keys(), path.name
        assert cfg.seed == 42 and cfg.num_workers == 0
