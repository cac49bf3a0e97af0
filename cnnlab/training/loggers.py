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
