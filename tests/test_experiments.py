"""Every experiment file and every command of README's "Reproducing the studies" table runs, on tiny data
generated in the real on-disk formats, with ``debug=smoke`` (one batch per split, one epoch, 32x32)."""

from __future__ import annotations

import csv
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import read_results, weights_off
from fakedata import write_all
from hydra import compose, initialize_config_module

from cnnlab import cli
from cnnlab.evaluation.studies import load_record
from cnnlab.evaluation.summary import find_run_dirs
from cnnlab.train import train

ROOT = Path(__file__).parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
SMOKE = ["debug=smoke"]
STUDY_ROWS = [row for study in load_record()["studies"].values() for row in study["compare"]]


def reproduce_rows() -> list[tuple[str, list[str], str]]:
    """(id, arguments after ``cnnlab``, runs cell) of each row of README's reproduction table."""
    section = (ROOT / "README.md").read_text().split("## Reproducing the studies", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\S+) \| `cnnlab ([^`]+)` \| ([^|]+) \|", section, re.M)
    return [(row_id, shlex.split(command), runs.strip()) for row_id, command, runs in rows]


def composed(*overrides: str):
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def experiment_weights_off(experiment: str) -> tuple[str, ...]:
    """The overrides that build the experiment's network without ImageNet weights (no download, no file)."""
    return tuple(weights_off(composed(f"experiment={experiment}").model.net))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("data"))


def test_s3_grid_options_set_the_reported_pairs():
    pairs = {
        (c.activation.alpha, c.activation.beta)
        for c in (
            composed("experiment=s3_resnet50_lrelu_fruits360", f"+grid={p.stem}")
            for p in (ROOT / "conf" / "grid").glob("s3_lrelu_*.yaml")
        )
    }
    assert pairs == {(1e-5, 0.99995), (1e-3, 0.95), (0.02, 0.90)}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_and_tests(experiment, data_dir, tmp_path):
    """Composed with Hydra's compose API and run by ``train`` in this process (the CLI's path minus the
    process start-up, which the table commands below exercise)."""
    extra = experiment_weights_off(experiment)
    cfg = composed(
        f"experiment={experiment}", *SMOKE, *extra, f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}"
    )
    results = train(cfg)
    assert results["status"] == "completed", results.get("error")
    assert 0.0 <= results["test/acc"] <= 1.0 and results["epochs_run"] == 1
    assert results["runtime"]["precision"] == "32-true"  # the study's float32, whatever the machine has
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"


def test_table_covers_every_experiment():
    commanded = " ".join(" ".join(args) for _, args, _ in reproduce_rows())
    assert len(reproduce_rows()) >= 15
    assert [e for e in EXPERIMENTS if e not in commanded] == []


@pytest.mark.parametrize("row", reproduce_rows(), ids=lambda row: row[0])
def test_readme_command_runs_its_jobs(row, data_dir, tmp_path, monkeypatch):
    """The README command through ``cnnlab.cli.main`` (the console script's function, argv and all), with
    the smoke preset, tiny data, no test stage, and 2 trials for searches; checks the number of runs."""
    row_id, args, runs = row
    experiments = next(a for a in args if a.startswith("experiment=")).split("=", 1)[1].split(",")
    off = {experiment_weights_off(e) for e in experiments}
    assert len(off) == 1, "a command mixes pretrained and from-scratch models"
    extra = [*SMOKE, "test=false", f"paths.data_dir={data_dir}"]
    # ++: the multirun's first composition applies no sweep value, so no pretrained model is chosen yet
    extra += [f"++{override}" for override in off.pop()]
    search = runs.endswith("trials")
    extra += ["hydra.sweeper.n_trials=2"] if search else []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cnnlab", *args, *extra])
    try:
        cli.main()
    except SystemExit as stop:
        assert not stop.code, f"cnnlab {' '.join(args)} exited {stop.code}"
    results = [read_results(run) for run in find_run_dirs([tmp_path / "outputs"])]
    assert len(results) == (2 if search else int(runs))
    assert [r.get("error") for r in results if r["status"] != "completed"] == []
    # every job names the study row it reproduces; the row's reported numbers are there to compare with
    assert {r["study"]["row"] for r in results} >= {row_id}
    if "-m" in args:
        (summary,) = (tmp_path / "outputs" / "multirun").glob("*/*/summary.md")
        assert f"Summary of {len(results)} runs" in summary.read_text()
        with open(summary.with_suffix(".csv"), newline="") as f:
            reported = {job["reported %"] for job in csv.DictReader(f)}
        assert {r["reported"] for r in STUDY_ROWS if r["row"] == row_id and r["reported"]} <= reported
