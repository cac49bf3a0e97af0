"""The per-run report: ``<run dir>/report/`` with the classification report, confusion matrix, ROC and
learning curves, per-class bars, misclassified images and a ``report.md`` that shows them all."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from cnnlab.data.base import ImageDataModule
from cnnlab.evaluation import plots
from cnnlab.evaluation.metrics import ClassificationMetrics, compute_metrics
from cnnlab.evaluation.studies import fidelity_link, report_section, update_comparison
from cnnlab.evaluation.summary import is_missing, read_overrides
from cnnlab.inference import Predictions
from cnnlab.training.module import ImageClassifier

# hyperparameter groups of ImageClassifier shown in the report's configuration summary
CONFIG_GROUPS = ("model", "activation", "optimizer", "scheduler", "freeze")


@dataclass
class Report:
    """What was written: the directory, the split it describes, its metrics and figures by name."""

    directory: Path
    split: str
    class_names: list[str]
    metrics: ClassificationMetrics
    figures: dict[str, Path]
    study: dict[str, Any] | None = None  # results.json's comparison with the study the run reproduces


def read_history(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """Per-epoch values of every metric in a CSVLogger ``metrics.csv`` (``{metric: {epoch: value}}``).

    Learning-rate columns (``lr-*``) are logged at the start of an epoch without an epoch number; each
    belongs to the first epoch whose end-of-epoch step is not before its own.
    """
    if not metrics_csv.exists():
        return {}
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    history: dict[str, dict[int, float]] = {}
    last_step: dict[int, int] = {}
    for row in rows:
        if row.get("epoch"):
            epoch = int(float(row["epoch"]))
            last_step[epoch] = max(last_step.get(epoch, -1), int(row["step"]))
            for key, value in row.items():
                if value and key not in ("epoch", "step"):
                    history.setdefault(key, {})[epoch] = float(value)
    for row in rows:
        if not row.get("epoch"):
            epoch = next((e for e, s in sorted(last_step.items()) if s >= int(row["step"])), None)
            for key, value in row.items():
                if value and key.startswith("lr-") and epoch is not None:
                    history.setdefault(key, {})[epoch] = float(value)
    return history


def _describe(config: Any) -> str:
    """``torch.optim.Adam(lr=0.001, ...)`` from a ``_target_`` config, or a model config's ``net`` (whose
    runtime switches beside it are left out); ``-`` when unset."""
    if isinstance(config, dict) and isinstance(config.get("net"), dict):
        config = config["net"]
    if not isinstance(config, dict) or not config.get("_target_"):
        return "-"
    options = ", ".join(f"{k}={v}" for k, v in config.items() if not k.startswith("_"))
    return f"`{config['_target_']}({options})`"


def _value(value: Any, digits: int = 4) -> str:
    if is_missing(value):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _markdown(report: Report, results: dict, hparams: dict, overrides: list[str], n_images: int) -> str:
    split, m = report.split, report.metrics
    macro, weighted = m.report["macro avg"], m.report["weighted avg"]
    facts = [
        (f"{split} accuracy", _value(m.report["accuracy"])),
        (f"{split} F1 (macro / weighted)", f"{_value(macro['f1-score'])} / {_value(weighted['f1-score'])}"),
        (f"{split} AUROC (macro, one-vs-rest)", _value(m.auroc_macro)),
        ("best val/acc", _value(results.get("val/acc_best"))),
        ("epochs run (best epoch)", f"{_value(results.get('epochs_run'))} ({_value(results.get('best_epoch'))})"),
        ("seconds per epoch (train)", _value(results.get("sec_per_epoch"), 2)),
        ("parameters (trainable)", f"{_value(results.get('num_params'))} ({_value(results.get('trainable_params'))})"),
        ("MACs", _value(results.get("macs"))),
    ]
    config = [(group, _describe(hparams.get(group))) for group in CONFIG_GROUPS]
    sections = [
        ("Learning curves", "learning_curves"),
        ("Confusion matrix", "confusion_matrix"),
        ("ROC curves", "roc_curves"),
        ("Per-class metrics", "per_class_metrics"),
        ("Misclassified images", "misclassified"),
    ]
    lines = [
        f"# Report: {report.directory.parent.name}",
        "",
        f"{split} split: {n_images} images, {len(report.class_names)} classes.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts),
        "",
        *report_section(results.get("study"), fidelity_link()),
        "## Configuration",
        "",
        f"Overrides: {' '.join(f'`{o}`' for o in overrides) or '(none)'}",
        "",
        *(f"- {group}: {text}" for group, text in config),
        "",
        "## Classification report",
        "",
        "```text",
        m.report_text.rstrip(),
        "```",
        "",
        "Also as [JSON](classification_report.json); raw confusion counts in "
        "[confusion_matrix.csv](confusion_matrix.csv); every prediction in [predictions.csv](predictions.csv).",
    ]
    for title, name in sections:
        if name in report.figures:
            lines += ["", f"## {title}", "", f"![{title}]({report.figures[name].name})"]
    others = sorted(set(report.directory.glob("*.png")) - set(report.figures.values()))
    if others:  # e.g. the data plots a run writes here before training
        lines += ["", "## Other figures", "", *(f"![{p.stem}]({p.name})" for p in others)]
    return "\n".join(lines) + "\n"


def write_report(
    predictions: Predictions,
    report_dir: Path,
    split: str,
    history: dict[str, dict[int, float]],
    results: dict,
    hparams: dict,
    overrides: list[str],
) -> Report:
    """Write every report file for ``predictions`` of ``split`` into ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    names = predictions.class_names
    metrics = compute_metrics(predictions)
    (report_dir / "classification_report.txt").write_text(metrics.report_text)
    (report_dir / "classification_report.json").write_text(json.dumps(metrics.report, indent=2))
    with open(report_dir / "confusion_matrix.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *counts] for name, counts in zip(names, metrics.confusion.tolist()))
    with open(report_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "true", "predicted", "confidence"])
        columns = zip(predictions.sources, predictions.labels, predictions.predicted, predictions.confidence)
        writer.writerows([source, names[t], names[p], f"{c:.6f}"] for source, t, p, c in columns)
    figures = {
        "confusion_matrix": plots.confusion_matrix_figure(metrics.confusion, names),
        "roc_curves": plots.roc_curves_figure(metrics.roc, metrics.auroc_macro),
        "per_class_metrics": plots.per_class_metrics_figure(metrics.per_class(names), names),
        "misclassified": plots.misclassified_figure(predictions),
    }
    if history:
        best_epoch = results.get("best_epoch")
        if best_epoch is None and history.get("val/loss"):
            best_epoch = min(history["val/loss"], key=history["val/loss"].get)
        figures["learning_curves"] = plots.learning_curves_figure(history, best_epoch)
    update_comparison(results)
    report = Report(
        report_dir,
        split,
        names,
        metrics,
        {name: plots.save(fig, report_dir / f"{name}.png") for name, fig in figures.items()},
        results.get("study"),
    )
    (report_dir / "report.md").write_text(_markdown(report, results, hparams, overrides, len(predictions.labels)))
    return report


def _metrics_csv(trainer: L.Trainer, output_dir: Path) -> Path:
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    return Path(csv_logger.log_dir if csv_logger else output_dir) / "metrics.csv"


def write_run_report(
    trainer: L.Trainer, module: ImageClassifier, datamodule: ImageDataModule, output_dir: Path, results: dict
) -> Report:
    """Report on the test split from the logits ``trainer.test`` computed (no second pass over the split);
    adds ``test/auroc_macro`` to ``results``."""
    split = datamodule.evaluation_split("test")
    count = min(len(module.test_logits), len(split))  # trainer.limit_test_batches may have tested fewer
    images = split.images
    predictions = Predictions(
        logits=module.test_logits[:count].numpy(),
        class_names=list(datamodule.class_names),
        sources=(list(split.sources) or [str(i) for i in range(len(split))])[:count],
        labels=module.test_labels[:count].numpy(),
        images=images[:count].cpu().numpy(),
    )
    report = write_report(
        predictions,
        output_dir / "report",
        split="test",
        history=read_history(_metrics_csv(trainer, output_dir)),
        results=results,
        hparams=dict(module.hparams),
        overrides=read_overrides(output_dir),
    )
    results["test/auroc_macro"] = report.metrics.auroc_macro
    return report
