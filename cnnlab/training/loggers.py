"""The CSV and MLflow loggers of a run dir, which a run resumed in place continues; the packages of the
optional loggers."""

from __future__ import annotations

import csv
import json
import logging
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from cnnlab.extras import require
from cnnlab.training.interrupts import signals_deferred

log = logging.getLogger(__name__)

MLFLOW_RUN_FILE = "mlflow_run.json"  # in the run dir: the MLflow run it logs to, and in which tracking store

# loggers whose package is an optional extra of cnnlab (cnnlab/extras.py), by class
OPTIONAL_PACKAGES = {
    "lightning.pytorch.loggers.TensorBoardLogger": "tensorboard",
    "cnnlab.training.loggers.RunMLFlowLogger": "mlflow",
}


def require_logger_packages(logger_cfg: Any) -> None:
    """Stop before any data is loaded, with the install command, when a configured logger's package is
    missing (Lightning would fail only when the logger is built, with a traceback)."""
    require(
        *(
            OPTIONAL_PACKAGES[c["_target_"]]
            for c in (logger_cfg or {}).values()
            if c and c.get("_target_") in OPTIONAL_PACKAGES
        )
    )


def _recorded_mlflow_run(run_file: Path, tracking_uri: str | None) -> str | None:
    """The MLflow run ``run_file`` records, if it is in ``tracking_uri``'s store and still there; a run since
    deleted is reported, and None returned (a new run starts)."""
    if not run_file.is_file():
        return None
    recorded = json.loads(run_file.read_text())
    if recorded.get("tracking_uri") != tracking_uri:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        gone = MlflowClient(tracking_uri).get_run(recorded["run_id"]).info.lifecycle_stage == "deleted"
    except MlflowException:
        gone = True
    if gone:
        log.warning(
            "MLflow run %s of this run dir is gone from %s: starting a new one", recorded["run_id"], tracking_uri
        )
        return None
    return recorded["run_id"]


class RunMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger tied to the run dir: a run resumed in place continues its MLflow run, as it
    continues its W&B run. The run is recorded in ``<run dir>/mlflow_run.json`` and continued when the
    tracking store is the same and the run still exists there. MLflow refuses to change a logged param, so a
    continued run logs only the params the run lacks, and each changed one (``trainer.max_epochs`` raised to
    train longer, ``ckpt_path``) as a tag ``resumed/<param>``."""

    def __init__(self, run_dir: str, tracking_uri: str | None = None, run_id: str | None = None, **kwargs: Any) -> None:
        self._run_file = Path(run_dir) / MLFLOW_RUN_FILE
        recorded = None if run_id else _recorded_mlflow_run(self._run_file, tracking_uri)
        self._continued = recorded is not None
        super().__init__(tracking_uri=tracking_uri, run_id=run_id or recorded, **kwargs)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        if self._continued:
            logged = self.experiment.get_run(self.run_id).data.params
            flat = _flatten_dict(_convert_params(params))
            for key, value in flat.items():
                if key in logged and str(value)[:250] != logged[key]:
                    self.experiment.set_tag(self.run_id, f"resumed/{key}", str(value)[:250])
            params = {key: value for key, value in flat.items() if key not in logged}
        super().log_hyperparams(params)
        self._run_file.parent.mkdir(parents=True, exist_ok=True)
        self._run_file.write_text(json.dumps({"run_id": self.run_id, "tracking_uri": self._tracking_uri}))


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer, changed in two ways. It appends to an existing ``metrics.csv`` instead of
    deleting it, so a resumed run's curves start at epoch 0, not at the epoch it resumed from. And each
    save replaces the file whole, with Ctrl-C and SIGTERM held until it is done: Lightning's save, stopped
    part-way, left rows with more fields than the header (values under the wrong columns), which the
    save on Lightning's way out then appended to."""

    def _check_log_dir_exists(self) -> None:
        """Keeps an existing ``metrics.csv`` (Lightning's writer deletes it); :meth:`save` reads its columns."""

    def save(self) -> None:
        if not self.metrics:
            return
        with signals_deferred():
            columns, rows = _read_rows(Path(self.metrics_file_path))
            _replace_rows(Path(self.metrics_file_path), sorted(set(columns).union(*self.metrics)), rows + self.metrics)
            self.metrics = []


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of a CSV file; none if there is no file."""
    if not path.is_file():
        return [], []
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _replace_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Writes ``rows`` under ``columns`` to a new file that then replaces ``path``: never half-written."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class RunCSVLogger(CSVLogger):
    """``metrics.csv`` in the run dir, continued (not replaced) when the run is resumed in place."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def rewind(self, global_step: int) -> None:
        """Drops the rows a run resumed from a checkpoint at ``global_step`` logs again (steps from there
        on, which a killed run may have flushed) and test rows (the resumed run tests again), so each
        epoch appears once and in order."""
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        columns, rows = _read_rows(path)
        tested = [column for column in columns if column.startswith("test/")]
        kept = [row for row in rows if int(row["step"]) < global_step and not any(row[k] for k in tested)]
        _replace_rows(path, columns, kept)
