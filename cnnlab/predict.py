"""``cnnlab-predict``: classify image files or folders with a trained checkpoint.

The preprocessing comes from the checkpoint (``hparams.preprocessing``), never from the user, so the
model sees exactly what it saw at evaluation. Writes ``predictions.csv`` and prints a short table.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import hydra
import torch
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.progress import track
from rich.table import Table

from cnnlab.data.images import IMAGE_EXTENSIONS, UNREADABLE_IMAGE_ERRORS, decode_image, to_chw_tensor
from cnnlab.data.preprocess import preprocess
from cnnlab.errors import CnnlabError, exit_on_user_error
from cnnlab.training.checkpoints import load_classifier, run_dir_of
from cnnlab.training.module import ImageClassifier

log = logging.getLogger(__name__)

def find_images(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files named in ``inputs`` (kept whatever their suffix) plus image files found recursively in
    the folders named there, sorted per folder."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif item.exists():
            paths.append(item)
        else:
            raise CnnlabError(f"input {item} does not exist")
    return paths


@dataclass
class Predictions:
    """Class probabilities for the files that could be read, and why the others could not."""

    class_names: list[str]
    paths: list[str] = field(default_factory=list)
    probs: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (N, num_classes)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> error

    @property
    def labels(self) -> list[str]:
        """Predicted class name per readable file."""
        return [self.class_names[i] for i in self.probs.argmax(1).tolist()]

    def top_k(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, class indices), each (N, k), most likely first."""
        return self.probs.topk(min(k, len(self.class_names)), dim=1)


@torch.inference_mode()
def predict_images(
    module: ImageClassifier, paths: Sequence[str | Path], batch_size: int = 64, progress: bool = False
) -> Predictions:
    """Run ``module`` on image files in batches, with the checkpoint's evaluation preprocessing.

    Unreadable files are recorded in ``Predictions.unreadable`` instead of raising.
    """
    if module.hparams.preprocessing["in_chans"] != 3:
        raise CnnlabError(f"image files are decoded to RGB; this model takes in_chans={module.hparams.preprocessing['in_chans']}")
    preprocessing = module.hparams.preprocessing
    result = Predictions(class_names=list(module.hparams.class_names))
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    if progress:
        batches = track(batches, description=f"Predicting {len(paths)} images")
    probs = []
    for batch in batches:
        images = []
        for path in batch:
            try:
                images.append(decode_image(Path(path), preprocessing["img_size"]))
                result.paths.append(str(path))
            except UNREADABLE_IMAGE_ERRORS as error:
                result.unreadable[str(path)] = f"{type(error).__name__}: {error}"
        if images:
            inputs = preprocess(to_chw_tensor(images).to(module.device), preprocessing)
            probs.append(module(inputs).float().softmax(1).cpu())
    result.probs = torch.cat(probs) if probs else torch.empty(0, len(result.class_names))
    return result


def write_csv(predictions: Predictions, path: Path, top_k: int) -> None:
    """One row per readable file: path, prediction, confidence, top_k (JSON {class: probability})."""
    values, indices = predictions.top_k(top_k)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "prediction", "confidence", "top_k"])
        for file, probs, classes in zip(predictions.paths, values.tolist(), indices.tolist()):
            top = {predictions.class_names[c]: round(p, 6) for c, p in zip(classes, probs)}
            writer.writerow([file, predictions.class_names[classes[0]], f"{probs[0]:.6f}", json.dumps(top)])


def print_summary(predictions: Predictions, top_k: int, max_rows: int, console: Console) -> None:
    """A short rich table of the first predictions, then the unreadable files."""
    values, indices = predictions.top_k(top_k)
    table = Table(title=f"{len(predictions.paths)} predictions", title_justify="left")
    for column in ("path", "prediction", "confidence", f"top-{values.shape[1]}"):
        table.add_column(column)
    for file, probs, classes in list(zip(predictions.paths, values.tolist(), indices.tolist()))[:max_rows]:
        top = ", ".join(f"{predictions.class_names[c]} {p:.2f}" for c, p in zip(classes, probs))
        table.add_row(file, predictions.class_names[classes[0]], f"{probs[0]:.3f}", top)
    if len(predictions.paths) > max_rows:
        table.caption = f"... {len(predictions.paths) - max_rows} more in predictions.csv"
    console.print(table)
    if predictions.unreadable:
        console.print(f"[yellow]{len(predictions.unreadable)} unreadable files (skipped):")
        for file, error in predictions.unreadable.items():
            console.print(f"  {file}: {error}", markup=False)


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Predict ``cfg.inputs`` with ``cfg.ckpt_path``; write predictions.csv (+ unreadable.txt)."""
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else cfg.inputs
    paths = find_images(inputs)
    if not paths:
        raise CnnlabError(f"no image files in {inputs} (suffixes {sorted(IMAGE_EXTENSIONS)})")
    module = load_classifier(cfg.ckpt_path, cfg.trust_checkpoint, cfg.device)
    predictions = predict_images(module, paths, cfg.batch_size, progress=True)

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


if __name__ == "__main__":
    main()
