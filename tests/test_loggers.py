"""The loggers a run can write besides its CSV log, all at once (``logger=[wandb,tensorboard,mlflow]``), read
back with each tool's own reader; a missing optional package stops the run with the install command."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

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
    results = json.loads((run_dir / "results.json").read_text())
    for metric in ("test/acc", "test/auroc_macro"):  # the test step's and the report's
        assert [e.value for e in events.Scalars(metric)] == pytest.approx([results[metric]]), metric


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
    results = json.loads((run_dir / "results.json").read_text())
    for metric in ("test/acc", "test/auroc_macro"):
        assert run.data.metrics[metric] == pytest.approx(results[metric]), metric


def test_loggers_combine_with_csv_and_wandb(run_dir: Path) -> None:
    assert len(per_epoch(run_dir, "val/acc")) == 2
    assert per_epoch(run_dir, "test/auroc_macro") == pytest.approx(
        [json.loads((run_dir / "results.json").read_text())["test/auroc_macro"]]
    )
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


def test_metrics_csv_save_stopped_by_ctrl_c_at_any_line_keeps_every_row_under_its_columns(tmp_path: Path) -> None:
    """Ctrl-C reaching the process at any line of a metrics.csv save (a new column: the file is rewritten)
    leaves a CSV whose rows sit under their own columns, each once, after the save Lightning makes on its
    way out; Lightning's own save left rows with more fields than the header."""
    from cnnlab.training.loggers import RunCSVLogger

    first = {"epoch": 0, "val/loss": 1.5}
    second = {"epoch": 0, "train/loss_epoch": 0.75}
    line = 0
    while True:
        line += 1
        writer = RunCSVLogger(str(tmp_path / f"line{line}"), name="", version="").experiment
        writer.log_metrics(first, step=9)
        writer.save()
        writer.log_metrics(second, step=9)
        interrupted = _save_with_sigint_at_line(writer, line)
        writer.save()  # Lightning's finalize("failed")
        with open(Path(writer.metrics_file_path), newline="") as file:
            reader = csv.DictReader(file)
            rows = [{k: v for k, v in row.items() if v} for row in reader]
            assert reader.fieldnames == ["epoch", "step", "train/loss_epoch", "val/loss"], line
        assert rows == [
            {"epoch": "0", "step": "9", "val/loss": "1.5"},
            {"epoch": "0", "step": "9", "train/loss_epoch": "0.75"},
        ], line
        if not interrupted:  # the save ran to its end before the line was reached
            break
    assert line > 20  # the save was stopped at every one of its lines


def _save_with_sigint_at_line(writer: Any, line: int) -> bool:
    """Runs ``writer.save()``, sending this process SIGINT when the ``line``-th line of Python (in any
    function the save calls) is about to run; whether the save was interrupted."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
            if count == line:
                os.kill(os.getpid(), signal.SIGINT)
        return trace

    # Python's Ctrl-C handler, as in a terminal: a test run started in the background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.settrace(trace)
    try:
        writer.save()
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGINT, previous)
    return False
