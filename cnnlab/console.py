"""What a run prints to the terminal: one line per event (no third-party noise), and at the end one
short block saying what came out and where it is."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

# (message regex, category) of warnings that repeat every run and ask nothing of the user
KNOWN_WARNINGS = [
    # Lightning's pytree helpers on torch >= 2.10 (lightning/pytorch/utilities/_pytree.py)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # the optional conf/ of the working directory (conf/train.yaml: hydra.searchpath) is usually absent
    (r"provider=hydra\.searchpath in main, path=conf is not available", UserWarning),
    # Lightning on any machine with SLURM's srun installed (a login node, a workstation with the client): its
    # hint to prepend srun is wrong for a plain run, and hydra/launcher=slurm starts jobs its own way
    (r"The `srun` command is available on your system but is not used", UserWarning),
]
# Lightning's INFO advertisement on every Trainer start
LIGHTNING_TIPS = ("litlogger",)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(tip in record.getMessage() for tip in LIGHTNING_TIPS)


_DROP_TIPS = _DropTips()


def filter_known_warnings() -> None:
    """Hide the warnings of :data:`KNOWN_WARNINGS`, matched by message and category: others still show."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_lightning() -> None:
    """Once Lightning is imported: its log lines go through Hydra's handlers only (console and
    ``train.log``) instead of also through the handlers Lightning adds itself, without its tips."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DROP_TIPS)


def per_class_counts(per_class: dict[str, dict[str, int]]) -> str:
    """Images per class of each split as one short line, fewest-most (every count: data/summary.json)."""
    parts = []
    for split, counts in per_class.items():
        values = list(counts.values()) or [0]
        low, high = min(values), max(values)
        parts.append(f"{split} {low}" if low == high else f"{split} {low}-{high}")
    return ", ".join(parts) + " (each class: data/summary.json)"


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def format_metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h {minutes:02d}m {seconds:02d}s"
        if hours
        else f"{minutes}m {seconds:02d}s"
        if minutes
        else f"{seconds}s"
    )


def run_end_block(results: dict[str, Any], run_dir: Path) -> str:
    """The block a finished run prints: its directory, test metrics, epochs, time, report and checkpoint."""
    lines = [f"Run finished: {shown_path(run_dir)}"]
    if "test/acc" in results:
        metrics = {"acc": "test/acc", "f1": "test/f1_macro", "auroc": "test/auroc_macro", "loss": "test/loss"}
        lines.append(
            "  test        " + "  ".join(f"{name} {format_metric(results.get(key))}" for name, key in metrics.items())
        )
    study = results.get("study")
    if study and study.get("comparison"):
        lines.append(f"  study       {study['comparison']}")
        departures = [d.split(" (", 1)[0] for d in study.get("departures", [])]
        if departures:
            lines.append(f"              departs from the study: {', '.join(departures)}")
        if study.get("deviations"):
            lines.append(
                f"              {len(study['deviations'])} recorded deviations of the experiment: "
                f"report.md, {study['fidelity']}"
            )
    epochs = f"best epoch {results.get('best_epoch', '-')}"
    if "tested_epoch" in results:
        epochs += f", tested epoch {results['tested_epoch']}"
    lines.append(f"  epochs      {epochs} (of {results.get('epochs_run', '-')} run)")
    lines.append(f"  time        {_duration(results.get('wall_time_sec', results.get('train_time_sec')))}")
    for label, path in (
        ("report", run_dir / "report" / "report.md"),
        ("checkpoint", run_dir / "checkpoints" / "best.ckpt"),
    ):
        if path.is_file():
            lines.append(f"  {label:<11} {shown_path(path)}")
    return "\n".join(lines)


def print_block(block: str) -> None:
    """Print ``block`` after whatever progress bar the run drew, as one write."""
    print(os.linesep + block, flush=True)
