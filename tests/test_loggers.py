"""The loggers a run can write besides its CSV log, all at once (``logger=[wandb,tensorboard,mlflow]``), read
back with each tool's own reader; a missing optional package stops the run with the install command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import logged_out_env, run_console_script, run_dirs

EPOCHS = ["debug=fast", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("loggers")
    run_console_script("cnnlab", [*EPOCHS, "logger=[wandb,tensorboard,mlflow]"], cwd, logged_out_env(cwd / "home"))
    (run,) = run_dirs(cwd)
    return run


def per_epoch(run: Path, metric: str) -> list[float]:
    """``metric`` at each epoch end, from the run's metrics.csv."""
    with open(run / "metrics.csv", newline="") as f:
        return [float(row[metric]) for row in csv.DictReader(f) if row.get(metric)]


def test_tensorboard_event_files_hold_the_per_epoch_scalars(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for metric in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert [e.value for e in events.Scalars(metric)] == pytest.approx(per_epoch(run_dir, metric)), metric
        assert len(events.Scalars(metric)) == 2, metric
    assert "hp_metric" not in events.Tags()["scalars"]  # no placeholder metric


def test_mlflow_run_holds_the_config_and_metrics(run_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir.parents[1] / 'mlflow.db'}")  # outputs/mlflow.db
    (run,) = client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["run_dir"] == str(run_dir)
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert float(run.data.params["optim/lr"]) == config["optim"]["lr"]
    assert run.data.params["model/net/_target_"] == config["model"]["net"]["_target_"]
    for metric in ("train/loss", "val/acc"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [m.value for m in history] == pytest.approx(per_epoch(run_dir, metric)), metric
    assert run.data.metrics["test/acc"] == pytest.approx(json.loads((run_dir / "results.json").read_text())["test/acc"])


def test_loggers_combine_with_csv_and_wandb(run_dir: Path) -> None:
    assert len(per_epoch(run_dir, "val/acc")) == 2
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    # the CSV log's hparams.yaml: the run's resolved config, once (not the module's hyperparameters again)
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["optim"] == yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["optim"]
    assert "optimizer" not in hparams and "class_names" not in hparams


def test_missing_logger_package_names_the_extra(tmp_path: Path) -> None:
    hide = tmp_path / "without_mlflow"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text('import sys\nsys.modules["mlflow"] = None  # as if not installed\n')
    env = dict(logged_out_env(tmp_path / "home"), PYTHONPATH=str(hide))
    result = run_console_script("cnnlab", ["debug=fast", "logger=mlflow"], tmp_path, env, check=False)
    assert result.returncode == 1
    message = "cnnlab: error: logger=mlflow needs mlflow, which is not installed: pip install 'cnnlab[mlflow]'"
    assert result.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("outputs/**/data/summary.json"))  # stopped before loading data
