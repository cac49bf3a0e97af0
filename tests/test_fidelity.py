"""Fidelity to the five studies: every setting of the record cnnlab/evaluation/studies.yaml (what each study
reported, with its seed section, and cnnlab's choice where the study is silent) against the config each run
composes; split sizes from cnnlab's split functions on label arrays of the real datasets' sizes; parameter
counts, optimizer and LR schedule from the module train.py builds (pretrained models without their weights);
and README's study table and fidelity section against the record.

A failure names the run, the setting, the seed section and both values.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import timm.data
import torch
from conftest import weights_off
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, IntUniformDistribution, LogUniformDistribution
from test_freeze import test_study_configs_train_as_many_base_parameters_as_keras as freeze_test

from cnnlab.data.base import Split
from cnnlab.data.splits import stratified_holdout, stratified_split
from cnnlab.evaluation.fidelity import BEGIN, END, STATUSES, page, readme_section
from cnnlab.evaluation.studies import FIDELITY_PAGE, load_record, resolved_runs, same
from cnnlab.train import build_module
from cnnlab.training.module import ImageClassifier

ROOT = Path(__file__).parents[1]
RECORD = load_record()
DATASETS = RECORD["datasets"]
RUNS = {
    run_id: (name, run) for name, study in RECORD["studies"].items() for run_id, run in resolved_runs(study).items()
}
ENTRIES = [(run_id, entry) for run_id, (_, run) in RUNS.items() for entry in run["settings"]]


def entry_id(value: Any) -> str:
    return f"{value[0]} | {value[1]['setting']}" if isinstance(value, tuple) else str(value)


@lru_cache(maxsize=None)
def composed(overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


# -- quantities computed from a composed config ---------------------------------------------------------------


def dataset(cfg: DictConfig) -> str:
    """The record's dataset name of the config's datamodule (cnnlab.data.<name>.<Class>)."""
    return cfg.data._target_.split(".")[-2]


def labels(count: int, classes: int) -> np.ndarray:
    """``count`` labels over ``classes`` classes, as even as the count allows."""
    return np.arange(count) % classes


def datamodule(cfg: DictConfig):
    """The run's datamodule, constructed (nothing loaded or written)."""
    return instantiate(cfg.data, root="unused")


def split_sizes(cfg: DictConfig) -> list[int]:
    """[train, val, test] as the run's datamodule splits the real dataset, through cnnlab/data/splits.py."""
    data, name = cfg.data, dataset(cfg)
    facts = DATASETS[name]
    if name == "eurosat":
        return [len(s) for s in stratified_split(eurosat_labels(), tuple(data.fractions), data.seed)]
    if name in ("cifar10", "fruits360"):
        if data.get("validation") == "test":  # the test images validate; every training image trains
            return [facts["train"], facts["test"], facts["test"]]
        if data.get("validation") == "last":  # Keras' validation_split: the tail of the training images
            train = math.floor(facts["train"] * (1 - data.val_fraction))
            return [train, facts["train"] - train, facts["test"]]
        keep, val = stratified_holdout(labels(facts["train"], facts["classes"]), data.val_fraction, data.seed)
        return [len(keep), len(val), facts["test"]]
    if name == "imagefolder":
        images = labels(facts["images"], facts["classes"])
        if data.get("expand_before_split"):  # the copies are made first, then split with their originals
            return [len(s) for s in datamodule(cfg).split_indices(np.tile(images, data.expand))]
        train, val, test = datamodule(cfg).split_indices(images)
        return [len(train) * data.expand, len(val), len(test)]
    raise KeyError(f"no record of dataset {name!r} in {DATASETS}")


def eurosat_labels() -> np.ndarray:
    return np.repeat(np.arange(len(DATASETS["eurosat"]["class_counts"])), DATASETS["eurosat"]["class_counts"])


def class_counts_in_test(cfg: DictConfig) -> list[int]:
    _, _, test = stratified_split(eurosat_labels(), tuple(cfg.data.fractions), cfg.data.seed)
    return np.bincount(eurosat_labels()[test]).tolist()


def steps_per_epoch(cfg: DictConfig) -> int:
    """Batches in an epoch of the run's train loader over a training split of the real size."""
    count = split_sizes(cfg)[0]
    data = datamodule(cfg)
    data.splits = {"train": Split(torch.empty((count, 0), dtype=torch.uint8), torch.zeros(count, dtype=torch.long))}
    return len(data.train_dataloader())


class RecordedData:
    """What ``build_module`` reads of a datamodule, for the real dataset's class count (nothing loaded)."""

    in_chans = 3

    def __init__(self, cfg: DictConfig) -> None:
        facts = DATASETS[dataset(cfg)]
        self.num_classes = facts.get("classes") or len(facts["class_counts"])
        self.class_names = [str(k) for k in range(self.num_classes)]
        self.img_size = cfg.data.img_size

    def setup(self) -> None:
        pass

    def preprocessing(self) -> dict:
        return {}


BUILT: dict[str, ImageClassifier] = {}  # network config -> module


def module(overrides: tuple[str, ...]) -> ImageClassifier:
    """The module train.py builds for the run; a pretrained backbone without its weights. Runs that differ only
    outside the network (data, trainer, optimizer) share one."""
    cfg = composed(overrides)
    off = weights_off(cfg.model.net)
    if off:
        cfg = composed((*overrides, *off))
    data = RecordedData(cfg)
    network = json.dumps(
        [plain(cfg.get(key)) for key in ("model", "activation", "freeze")] + [data.num_classes, data.img_size]
    )
    if network not in BUILT:
        BUILT[network] = build_module(cfg, data)
    return BUILT[network]


def num_params(cfg: DictConfig, overrides: tuple[str, ...]) -> int:
    return sum(p.numel() for p in module(overrides).net.parameters())


def keras_params(cfg: DictConfig, overrides: tuple[str, ...]) -> int:
    """Keras' "Total params": the parameters plus every BatchNorm's moving mean and variance."""
    net = module(overrides).net
    return num_params(cfg, overrides) + sum(
        b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var"))
    )


def configured_optimizers(cfg: DictConfig) -> Any:
    """What ImageClassifier.configure_optimizers returns for the run's optimizer and scheduler configs, over
    one stand-in parameter (the network does not change them)."""
    param = torch.zeros(1, requires_grad=True)
    stand_in = SimpleNamespace(
        hparams=SimpleNamespace(optimizer=plain(cfg.optim), scheduler=plain(cfg.scheduler)),
        trainable_parameters=lambda: [param],
    )
    return ImageClassifier.configure_optimizers(stand_in)


def optimizer(cfg: DictConfig, overrides: tuple[str, ...]) -> dict:
    configured = configured_optimizers(cfg)
    optim = configured["optimizer"] if isinstance(configured, dict) else configured
    return {"class": type(optim).__name__, **optim.param_groups[0]}


def scheduler(cfg: DictConfig, overrides: tuple[str, ...]) -> dict | None:
    configured = configured_optimizers(cfg)
    if not isinstance(configured, dict):
        return None
    plan = configured["lr_scheduler"]
    sched = plan["scheduler"]
    return {
        "class": type(sched).__name__,
        "monitor": plan["monitor"],
        "mode": sched.mode,
        "factor": sched.factor,
        "patience": sched.patience,
        "min_lr": sched.min_lrs[0],
        "threshold": sched.threshold,
        "threshold_mode": sched.threshold_mode,
        "cooldown": sched.cooldown,
    }


def normalization(cfg: DictConfig, overrides: tuple[str, ...]) -> dict | None:
    """The mean/std the inputs get: data.mean/std, else a pretrained backbone's own (a Keras twin's Keras
    preprocessing, timm's pretrained_cfg)."""
    if cfg.data.mean is not None:
        return {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}
    if cfg.model.net.get("weights") == "keras":
        return module(overrides).net.input_normalization
    if cfg.model.net.get("pretrained"):
        resolved = timm.data.resolve_model_data_config(module(overrides).net.backbone)
        return {"mean": list(resolved["mean"]), "std": list(resolved["std"])}
    return None


def search_space(cfg: DictConfig) -> dict:
    """Each searched key's values (a list) or log-uniform range ({log: [low, high]}), as Optuna samples them."""
    space = {}
    for key, value in cfg.hydra.sweeper.params.items():
        override = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
        distribution = create_optuna_distribution_from_override(override)
        if isinstance(distribution, CategoricalDistribution):
            space[key] = list(distribution.choices)
        elif isinstance(distribution, IntUniformDistribution):
            space[key] = list(range(distribution.low, distribution.high + 1, distribution.step))
        elif isinstance(distribution, LogUniformDistribution):
            space[key] = {"log": [distribution.low, distribution.high]}
        else:
            raise TypeError(f"{key}: no record format for {distribution!r}")
    return space


# quantity -> f(cfg, overrides)
COMPUTED: dict[str, Callable[[DictConfig, tuple[str, ...]], Any]] = {
    "split_sizes": lambda cfg, _: split_sizes(cfg),
    "test_class_counts": lambda cfg, _: class_counts_in_test(cfg),
    "steps_per_epoch": lambda cfg, _: steps_per_epoch(cfg),
    "params": num_params,
    "keras_params": keras_params,
    "optimizer": optimizer,
    "scheduler": scheduler,
    "normalization": normalization,
    "search_space": lambda cfg, _: search_space(cfg),
}
# asserted by tests/test_freeze.py, which builds the base with Keras' layer lists: here only referenced
REFERENCED = {"trainable_params_base"}


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def differences(name: str, actual: Any, expected: Any) -> list[str]:
    """What differs, key by key for a dict (an optimizer's or scheduler's settings)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [
            f"{name}.{k} is {actual.get(k)!r}, the record says {v!r}"
            for k, v in expected.items()
            if not same(actual.get(k), v)
        ]
    return [] if same(actual, expected) else [f"{name} is {actual!r}, the record says {expected!r}"]


@pytest.fixture(scope="module", autouse=True)
def offline_and_freed():
    """No hub access while building pretrained architectures; the built modules freed afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield
    BUILT.clear()


@pytest.mark.parametrize("run_entry", ENTRIES, ids=entry_id)
def test_run_keeps_the_studys_setting(run_entry):
    run_id, entry = run_entry
    _, run = RUNS[run_id]
    overrides = tuple(run["compose"])
    cfg = composed(overrides)
    problems = []
    for key, expected in (entry.get("config") or {}).items():
        problems += differences(key, plain(OmegaConf.select(cfg, key)), expected)
    for name, expected in (entry.get("computed") or {}).items():
        if name not in REFERENCED:
            problems += differences(name, COMPUTED[name](cfg, overrides), expected)
    if problems:
        pytest.fail(f"{run_id}: {entry['setting']} ({entry['status']}, {entry['source']}): " + "; ".join(problems))


def test_trainable_base_parameters_are_asserted_by_test_freeze():
    """Each trainable-base-parameter count of the record (the studies' Keras freeze numbers) is a case of
    test_freeze.py's test through the same overrides, which builds the base and counts Keras' layers."""
    (mark,) = [m for m in freeze_test.pytestmark if m.name == "parametrize"]
    cases = {(tuple(overrides), expected) for overrides, expected in mark.args[1]}
    recorded = {
        (tuple(RUNS[entry["origin"]][1]["compose"]), entry["computed"]["trainable_params_base"])
        for _, entry in ENTRIES
        if "trainable_params_base" in (entry.get("computed") or {})
    }
    assert {count for _, count in recorded} >= {0, 732_480, 1_206_080, 2_223_872, 4_096, 1_956_880}
    assert sorted(recorded - cases) == []


def test_record_is_well_formed():
    """Every entry says what the study says and where; a choice, reading or difference says why."""
    problems = []
    for run_id, entry in ENTRIES:
        where = f"{run_id} | {entry.get('setting')}"
        if entry.get("status") not in STATUSES:
            problems.append(f"{where}: status {entry.get('status')!r} not in {STATUSES}")
        if not entry.get("source", "").startswith(tuple(RECORD["studies"])):
            problems.append(f"{where}: source should name the seed section, e.g. 'S2 sec. 6.4'")
        if entry.get("status") in ("silent", "ambiguous", "differs") and not entry.get("why"):
            problems.append(f"{where}: a {entry['status']} setting needs `why`")
        unknown = set(entry.get("computed") or {}) - set(COMPUTED) - REFERENCED
        if unknown:
            problems.append(f"{where}: no way to compute {sorted(unknown)}")
    for run_id, (_, run) in RUNS.items():
        for result in run.get("results") or []:
            where = f"{run_id} | result {result.get('metric')!r}"
            if set(result) - {"metric", "value", "source", "conflict"} or not result.get("value"):
                problems.append(f"{where}: a result has metric, value, source and perhaps conflict")
            if not str(result.get("source", "")).startswith(tuple(RECORD["studies"])):
                problems.append(f"{where}: source should name the seed section")
            if "conflict" in result and not result["conflict"]:
                problems.append(f"{where}: a conflict says what the seed reports elsewhere")
    for study in RECORD["studies"].values():
        runs = resolved_runs(study)
        for run_id, run in study["runs"].items():
            inherited = {e["setting"] for e in runs[run["inherits"]]["settings"]} if run.get("inherits") else set()
            problems += [
                f"{run_id}: drops {name!r}, which it does not inherit"
                for name in run.get("drop", [])
                if name not in inherited
            ]
    assert problems == []


def test_every_experiment_grid_and_search_file_has_a_record():
    composed_files = {o for _, run in RUNS.values() for o in run["compose"]}
    files = [
        f"{prefix}{path.stem}"
        for group, prefix in (("experiment", "experiment="), ("grid", "+grid="), ("hparams_search", "hparams_search="))
        for path in sorted((ROOT / "conf" / group).glob("*.yaml"))
    ]
    assert [f for f in files if f not in composed_files] == []


# -- README ---------------------------------------------------------------------------------------------------


def readme() -> str:
    return (ROOT / "README.md").read_text()


def reproduce_table() -> dict[str, dict[str, str]]:
    """README's "Reproducing the studies" table: row id -> {column header: cell}."""
    body = readme().split("## Reproducing the studies", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(header, row)) for row in rows}


def as_number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


# a number as the README and the record write it (93.94, 1,368,778, 2.326e-4), not part of a name (ResNet-18, S2)
NUMBER = re.compile(r"(?<![A-Za-z]-)(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?")


def numbers(text: str) -> list[str]:
    """The numbers ``text`` shows, in order; what is in `code` (commands, option values) left out."""
    return NUMBER.findall(re.sub(r"`[^`]*`", "", text))


def reported_numbers(study: dict, experiments: list[str]) -> set[str]:
    """Every number of the results (values and conflicts) of the study's runs of these experiments."""
    return {
        number
        for run_id, run in study["runs"].items()
        if run_id.split()[0] in experiments
        for result in run.get("results") or []
        for number in numbers(f"{result['value']} {result.get('conflict', '')}")
    }


README_ROWS = [
    (row_id, row, study) for study in RECORD["studies"].values() for row_id, row in study["readme_rows"].items()
]


@pytest.mark.parametrize("row_id, row, study", README_ROWS, ids=[r for r, _, _ in README_ROWS])
def test_readme_row_runs_the_recorded_experiments_and_shows_exactly_the_reported_numbers(row_id, row, study):
    table = reproduce_table()
    assert row_id in table, f"README's study table has no row {row_id}"
    cells = table[row_id]
    command = shlex.split(re.search(r"`cnnlab ([^`]+)`", cells["command"]).group(1))
    overrides = dict(arg.split("=", 1) for arg in command if "=" in arg)
    assert overrides["experiment"].split(",") == row["experiments"], f"{row_id}: the command runs other experiments"
    for key, values in (row.get("sweep") or {}).items():
        assert key in overrides, f"{row_id}: the command does not set {key}"
        assert [as_number(v) for v in overrides[key].split(",")] == [as_number(str(v)) for v in values], (
            f"{row_id}: {key}={overrides[key]}, the record says {values}"
        )
    reported = next(v for k, v in cells.items() if k.startswith("reported"))
    assert numbers(reported) == row["reported"], f"{row_id}: README's reported cell shows other numbers"
    unrecorded = [n for n in row["reported"] if n not in reported_numbers(study, row["experiments"])]
    assert unrecorded == [], f"{row_id}: no result of the row's runs in the record reports {unrecorded}"


def test_numbers_are_read_as_the_readme_writes_them():
    text = "ResNet-18 89.85 % (also 78.3 %), S2's 1,368,778 at `freeze.trainable=10` lr 2.326e-4; 77, 84 %"
    assert numbers(text) == ["89.85", "78.3", "1,368,778", "2.326e-4", "77", "84"]


def test_readme_fidelity_section_and_fidelity_page_are_the_generated_ones():
    """README's per-study summary and docs/fidelity.md come from the installed record, as cnnlab-studies
    writes them."""
    text = readme()
    assert BEGIN in text and END in text, (
        f"README.md has no fidelity section: add the lines\n{BEGIN}\n{END}\nand run `cnnlab-studies --write-docs .`"
    )
    current = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
    regenerate = "cnnlab/evaluation/studies.yaml changed: run `cnnlab-studies --write-docs .`"
    assert current == readme_section(RECORD), regenerate
    assert (ROOT / FIDELITY_PAGE).read_text() == page(RECORD), regenerate


# -- framework semantics the record translates ----------------------------------------------------------------


def keras_plateau_lrs(
    losses: list[float], lr: float, factor: float, patience: int, min_lr: float, min_delta: float = 1e-4
) -> list[float]:
    """The learning rate after each epoch under Keras' ReduceLROnPlateau (mode min, cooldown 0;
    keras/src/callbacks/reduce_lr_on_plateau.py, monitor_callback.py): an epoch improves when it beats the best
    by min_delta (absolute); the LR is cut once `patience` epochs in a row have not."""
    best, wait, lrs = math.inf, 0, []
    for loss in losses:
        if loss < best - min_delta:
            best, wait = loss, 0
        else:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr, wait = max(lr * factor, min_lr), 0
        lrs.append(lr)
    return lrs


def plateau_losses(seed: int, epochs: int = 60) -> list[float]:
    """A validation loss that falls, stalls and creeps: steps of -2e-3 .. +1e-3, a third of them below 2e-4."""
    rng = np.random.default_rng(seed)
    steps = np.where(rng.random(epochs) < 0.35, rng.uniform(-2e-4, 5e-5, epochs), rng.uniform(-2e-3, 1e-3, epochs))
    return (0.8 + np.cumsum(steps)).tolist()


S2_PLATEAU_RUNS = [
    ("experiment=s2_resnet18_tuned_cifar10",),
    ("experiment=s2_mobilenet_tuned_cifar10",),
    ("experiment=s2_alexnet_cifar10", "hparams_search=s2_alexnet_hyperband"),
]


@pytest.mark.parametrize("overrides", S2_PLATEAU_RUNS, ids=lambda o: " ".join(o))
def test_s2_plateau_cuts_the_lr_when_keras_did(overrides):
    """S2 sec. 7.3's ReduceLROnPlateau(factor=0.5, patience=3, min_lr=1e-6) in Keras, against the torch scheduler
    the run's config builds, over 100 loss curves: the same learning rate after every epoch."""
    cfg = composed(overrides)
    for seed in range(100):
        losses = plateau_losses(seed)
        param = torch.zeros(1, requires_grad=True)
        optim = torch.optim.Adam([param], lr=cfg.optim.lr)
        sched = instantiate(cfg.scheduler)(optimizer=optim)
        torch_lrs = []
        for loss in losses:
            sched.step(loss)
            torch_lrs.append(optim.param_groups[0]["lr"])
        keras_lrs = keras_plateau_lrs(losses, cfg.optim.lr, factor=0.5, patience=3, min_lr=1e-6)
        assert torch_lrs == pytest.approx(keras_lrs, rel=1e-12), f"loss curve {seed}"
