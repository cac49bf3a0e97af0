"""``cnnlab-predict``: classify image files or folders with a trained checkpoint.

The preprocessing comes from the checkpoint (``hparams.preprocessing``), never from the user, so the
model sees exactly what it saw at evaluation. Writes ``predictions.csv`` and prints a short table.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from cnnlab.data.images import IMAGE_EXTENSIONS
from cnnlab.errors import CnnlabError, exit_on_user_error
from cnnlab.inference import Predictions, load_classifier, predict_files
from cnnlab.training.checkpoints import run_dir_of

log = logging.getLogger(__name__)

URL_NOT_SUPPORTED = "a URL, not a file: cnnlab-predict does not download; download it and pass its path"


def find_images(inputs: str | Path | Sequence[str | Path]) -> tuple[list[Path], dict[str, str]]:
    """Files named in ``inputs`` (kept whatever their suffix) plus image files found recursively in the
    folders named there, sorted per folder; and the inputs that are neither (missing, or URLs), with why."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    not_found: dict[str, str] = {}
    for name in map(str, inputs):
        item = Path(name)
        if "://" in name:
            not_found[name] = URL_NOT_SUPPORTED
        elif item.is_dir():
            paths.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif item.exists():
            paths.append(item)
        else:
            not_found[name] = "no such file or folder"
    return paths, not_found


def write_csv(predictions: Predictions, path: Path, top_k: int) -> None:
    """One row per readable file: path, prediction, confidence, top_k (JSON {class: probability})."""
    values, indices = predictions.top_k(top_k)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "prediction", "confidence", "top_k"])
        for file, probs, classes in zip(predictions.sources, values.tolist(), indices.tolist()):
            top = {predictions.class_names[c]: round(p, 6) for c, p in zip(classes, probs)}
            writer.writerow([file, predictions.class_names[classes[0]], f"{probs[0]:.6f}", json.dumps(top)])


def print_summary(predictions: Predictions, top_k: int, max_rows: int, console: Console) -> None:
    """A short rich table of the first predictions, then the inputs that could not be predicted."""
    values, indices = predictions.top_k(top_k)
    table = Table(title=f"{len(predictions.sources)} predictions", title_justify="left")
    for column in ("path", "prediction", "confidence", f"top-{values.shape[1]}"):
        table.add_column(column)
    for file, probs, classes in list(zip(predictions.sources, values.tolist(), indices.tolist()))[:max_rows]:
        top = ", ".join(f"{predictions.class_names[c]} {p:.2f}" for c, p in zip(classes, probs))
        table.add_row(file, predictions.class_names[classes[0]], f"{probs[0]:.3f}", top)
    if len(predictions.sources) > max_rows:
        table.caption = f"... {len(predictions.sources) - max_rows} more in predictions.csv"
    console.print(table)
    if predictions.unreadable:
        console.print(f"[yellow]{len(predictions.unreadable)} inputs not predicted (skipped):")
        for file, error in predictions.unreadable.items():
            console.print(f"  {file}: {error}", markup=False)


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Predict ``cfg.inputs`` with ``cfg.ckpt_path``; write predictions.csv (+ unreadable.txt, every input not
    predicted and why). Inputs that are missing, URLs or unreadable are listed and skipped; the command
    fails only when none could be predicted."""
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else cfg.inputs
    paths, not_found = find_images(inputs)
    if not paths and not not_found:
        raise CnnlabError(f"no image files in {inputs} (suffixes {sorted(IMAGE_EXTENSIONS)})")
    module = load_classifier(cfg.ckpt_path, cfg.trust_checkpoint, cfg.device)
    predictions = predict_files(module, paths, cfg.batch_size, unreadable=not_found, progress=True)

    output_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir_of(cfg.ckpt_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / "predictions.csv"
    write_csv(predictions, csv_path, cfg.top_k)
    unreadable_path = output_dir / "unreadable.txt"
    if predictions.unreadable:
        unreadable_path.write_text("".join(f"{p}\t{e}\n" for p, e in predictions.unreadable.items()))
    else:
        unreadable_path.unlink(missing_ok=True)
    console = Console()
    print_summary(predictions, cfg.top_k, cfg.max_rows, console)
    console.print(f"wrote {csv_path}")
    if not predictions.sources:
        raise CnnlabError(
            f"none of the {len(predictions.unreadable)} inputs could be predicted "
            f"(listed above and in {unreadable_path})"
        )


if __name__ == "__main__":
    main()
