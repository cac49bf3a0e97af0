"""Weights & Biases views of a run: flat config keys, the report's images, interactive charts and tables,
offline fallback, one W&B run per job (grouped by sweep).

``wandb`` is imported only when a W&B logger is configured: plain CSV runs never pay for it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from cnnlab.evaluation.studies import tracker_fields
from cnnlab.evaluation.summary import Summary, find_run_dirs, summarize

if TYPE_CHECKING:
    from cnnlab.evaluation.report import Report

log = logging.getLogger(__name__)

OFFLINE_MODES = ("offline", "dryrun", "disabled")


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` to ``{"optim.lr": 0.1}``, so W&B can group and plot by each key."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def prepare_wandb(cfg: DictConfig) -> None:
    """Before the W&B logger is built: go offline (without prompting) when there is no W&B login or the
    W&B server cannot be reached, and in a multirun put every job in one group named after the sweep and
    name it by its overrides.

    Offline is chosen as the run's ``mode`` (passed to ``wandb.init``): wandb fixes its settings at the
    first ``wandb.login``, so setting ``WANDB_MODE`` after it is ignored and ``wandb.init`` fails on
    the missing API key (or, logged in without network, after a 90 s timeout)."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg or "_target_" not in wandb_cfg:  # absent, or settings (conf/local) without logger=wandb
        return
    import wandb

    mode = (
        wandb_cfg.get("mode") or os.environ.get("WANDB_MODE") or ("offline" if wandb_cfg.get("offline") else "online")
    )
    if mode not in OFFLINE_MODES:
        reason = None
        if not wandb.login(prompt=False, verify=False):
            reason = "No W&B login (`wandb login` or WANDB_API_KEY)"
        elif not _reachable(server := wandb.setup().settings.base_url):
            reason = f"W&B server {server} not reachable"
        if reason:
            log.warning("%s: logging offline; the run ends with the `wandb sync` command that uploads it", reason)
            wandb_cfg.mode = "offline"  # not the logger's `offline` flag, which Lightning refuses with log_model
    if not wandb_cfg.get("id"):
        wandb_cfg.id = _run_id(Path(cfg.paths.output_dir))
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        wandb_cfg.group = sweep_group(Path(hydra_cfg.sweep.dir), Path(cfg.paths.log_dir))
        if not wandb_cfg.get("name"):
            wandb_cfg.name = hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"


def sweep_group(sweep_dir: Path, log_dir: Path) -> str:
    """The W&B group of a multirun's jobs: its sweep dir below the log dir."""
    return str(sweep_dir.relative_to(log_dir)) if sweep_dir.is_relative_to(log_dir) else sweep_dir.name


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within ``timeout`` seconds."""
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout
        ).close()
    except OSError:
        return False
    return True


def _run_id(output_dir: Path) -> str:
    """The W&B run id of this run dir, made once and kept in it: a run resumed in place continues
    the same W&B run instead of starting a second one."""
    path = output_dir / "wandb_run_id.txt"
    if not path.exists():
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(4))  # W&B ids: short lowercase alphanumerics
    return path.read_text().strip()


def log_config(loggers: list[Logger], cfg: DictConfig, study: dict[str, Any] | None = None) -> None:
    """Give every logger the resolved config and, under ``study``, the study row the run reproduces and its
    reported value (:func:`cnnlab.evaluation.studies.match_study`); W&B gets it as flat dotted keys, MLflow
    also as tags ``study`` and ``study_row`` to filter runs by."""
    config = OmegaConf.to_container(cfg, resolve=True)
    fields = tracker_fields(study)
    if fields:
        config["study"] = fields
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            # before the W&B run starts (logging starts it): Lightning always passes `anonymous`, which wandb
            # >= 0.19 answers with a deprecation warning on every run
            logger._wandb_init.pop("anonymous", None)
        logger.log_hyperparams(flatten(config) if isinstance(logger, WandbLogger) else config)
        if fields and isinstance(logger, MLFlowLogger):
            logger.experiment.set_tag(logger.run_id, "study", fields["id"])
            logger.experiment.set_tag(logger.run_id, "study_row", str(fields["row"]))


def log_report(loggers: list[Logger], report: Report) -> None:
    """Show the report in W&B: its figures as images; the confusion matrix and ROC curves as interactive
    charts (W&B's own confusion-matrix and ROC panels, drawn from the report's counts and curves); the
    confusion matrix and per-class classification report as tables."""
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    names, metrics = report.class_names, report.metrics
    rows = [*names, "macro avg", "weighted avg"]
    columns = ["precision", "recall", "f1-score", "support"]
    data: dict[str, Any] = {f"report/{name}": wandb.Image(str(path)) for name, path in report.figures.items()}
    data["report/confusion_matrix_table"] = wandb.Table(
        columns=["true \\ predicted", *names],
        data=[[name, *counts] for name, counts in zip(names, metrics.confusion.tolist())],
    )
    data["report/classification_report"] = wandb.Table(
        columns=["class", *columns], data=[[row, *(metrics.report[row][c] for c in columns)] for row in rows]
    )
    true, predicted = np.nonzero(metrics.confusion)
    counts = metrics.confusion[true, predicted]
    data["report/confusion_matrix_chart"] = wandb.plot.confusion_matrix(
        y_true=np.repeat(true, counts).tolist(),
        preds=np.repeat(predicted, counts).tolist(),
        class_names=names,
        title=f"Confusion matrix ({report.split})",
    )
    # the chart wandb.plot.roc_curve draws, from the report's curves (roc_curve recomputes them and needs pandas)
    roc_rows = [[name, float(x), float(y)] for name, curve in metrics.roc.items() for x, y in zip(curve.fpr, curve.tpr)]
    data["report/roc_curves_chart"] = wandb.plot_table(
        "wandb/area-under-curve/v0",
        wandb.Table(columns=["class", "fpr", "tpr"], data=roc_rows),
        {"x": "fpr", "y": "tpr", "class": "class"},
        {
            "title": f"ROC curves ({report.split}, macro AUROC {metrics.auroc_macro:.4f})",
            "x-axis-title": "False positive rate",
            "y-axis-title": "True positive rate",
        },
    )
    data.update(_study_chart(report.study))
    for logger in wandb_loggers:
        logger.experiment.log(data)
        logger.experiment.summary[f"{report.split}/auroc_macro"] = metrics.auroc_macro
        for key in ("reported", "this_run", "difference"):
            if (report.study or {}).get(key) is not None:
                logger.experiment.summary[f"study/{key}"] = report.study[key]


def _study_chart(study: dict[str, Any] | None) -> dict[str, Any]:
    """The study's number beside this run's as a W&B table and bar chart (wandb.plot.bar), in the study's %."""
    if not study or study.get("this_run") is None:
        return {}
    import wandb

    table = wandb.Table(
        columns=["source", "accuracy %"], data=[["reported", study["reported"]], ["this run", study["this_run"]]]
    )
    title = f"{study['row']}: {study['metric']} reported vs this run"
    return {
        "study/comparison": table,
        "study/comparison_chart": wandb.plot.bar(table, "source", "accuracy %", title=title),
    }


def finish_wandb(failed: bool) -> None:
    """End the job's W&B run (so the next multirun job starts its own) and, when offline, print how to
    upload it."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    run = wandb.run
    offline = run.offline
    run_dir = Path(run.dir).parent
    wandb.finish(exit_code=1 if failed else 0)
    if offline:
        print(f"W&B run saved offline; upload it with:\n  wandb sync {run_dir}")


class SweepStudyComparison(Callback):
    """Hydra callback: at the end of a multirun whose jobs logged to W&B and reproduce a study, one more W&B
    run in the sweep's group (job type ``summary``) with the study's number beside each job's, as a table and
    a bar chart of the differences (wandb.plot.bar), so the sweep is compared with the study in W&B's UI."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        wandb_cfg = (config.get("logger") or {}).get("wandb")
        if not wandb_cfg or "_target_" not in wandb_cfg:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        run_dirs = find_run_dirs([sweep_dir])
        summary = summarize(run_dirs, base=sweep_dir, metric=config.get("optimized_metric"))
        if not any(s.get("reported") is not None for s in summary.studies):
            return
        import wandb

        offline = any(d.glob("wandb/offline-run-*") for d in run_dirs)
        run = wandb.init(
            project=wandb_cfg.get("project"),
            entity=wandb_cfg.get("entity"),
            group=sweep_group(sweep_dir, Path(config.paths.log_dir)),
            name="study comparison",
            job_type="summary",
            dir=str(sweep_dir),
            mode="offline" if offline else wandb_cfg.get("mode") or "online",
        )
        table = comparison_table(summary)
        run.log(
            {
                "study/comparison": table,
                "study/difference_chart": wandb.plot.bar(
                    table, "job", "difference", title="This run minus the study's number (percentage points)"
                ),
            }
        )
        run.finish()
        if offline:
            print(f"W&B sweep comparison saved offline; upload it with:\n  wandb sync {Path(run.dir).parent}")


def comparison_table(summary: Summary) -> Any:
    """Each job that has a study number: the job, its study row, the reported value, the run's, the difference."""
    import wandb

    rows = [
        [row["run"], row["study"]["row"], s["reported"], s["this_run"], s["difference"]]
        for row in summary.rows
        if (s := row.get("study") or {}).get("reported") is not None and s.get("this_run") is not None
    ]
    return wandb.Table(columns=["job", "study row", "reported %", "this run %", "difference"], data=rows)
