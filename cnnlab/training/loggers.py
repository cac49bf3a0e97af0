"""A CSV logger that keeps the rows of the run it continues; the packages of the optional loggers."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from cnnlab.extras import require
from cnnlab.training.interrupts import signals_deferred

# loggers whose package is an optional extra of cnnlab (cnnlab/extras.py), by class
OPTIONAL_PACKAGES = {
    "lightning.pytorch.loggers.TensorBoardLogger": "tensorboard",
    "lightning.pytorch.loggers.MLFlowLogger": "mlflow",
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


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer, changed in two ways. It appends to an existing ``metrics.csv`` instead of
    deleting it, so a resumed run's curves start at epoch 0, not at the epoch it resumed from. And each
    save replaces the file whole, with Ctrl-C and SIGTERM held until it is done: Lightning's save, stopped
    part-way, left rows with more fields than the header (values under the wrong columns), which the
    save on Lightning's way out then appended to."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def save(self) -> None:
        if not self.metrics:
            return
        with signals_deferred():
            path = Path(self.metrics_file_path)
            keys = sorted(set(self.metrics_keys).union(*self.metrics))
            rows: list[dict[str, Any]] = []
            if path.is_file():
                with path.open(newline="") as file:
                    rows = list(csv.DictReader(file))
            tmp = path.with_suffix(".csv.tmp")
            with tmp.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows + self.metrics)
            os.replace(tmp, path)
            self.metrics_keys, self.metrics = keys, []


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
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            fieldnames = reader.fieldnames or []
            kept = [
                row
                for row in reader
                if int(row["step"]) < global_step and not any(row[k] for k in fieldnames if k.startswith("test/"))
            ]
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)
