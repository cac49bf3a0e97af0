"""Plots of a run's data for a person to look at: sample images per class, the same images after the
train augmentation, and the class distribution of each split (PNGs).

Drawing uses matplotlib's object API (no pyplot state), so a run can draw these in a background thread
while it trains; picking and augmenting the samples touches the datamodule and the RNG, so it happens
first, in the caller's thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from cnnlab.data.base import ImageDataModule

log = logging.getLogger(__name__)


@dataclass
class DataSamples:
    """What the data plots show, taken from a datamodule."""

    images: torch.Tensor  # (N, C, H, W) in [0, 1], class rows one after another
    augmented: torch.Tensor  # the same images through the train augmentation
    counts: list[int]  # images of each class row
    class_names: list[str]  # one per row
    per_class: int
    split_counts: dict[str, np.ndarray]  # images per class (all classes) in each split
    all_class_names: list[str]


def sample_data(datamodule: ImageDataModule, per_class: int = 6, max_classes: int = 20, seed: int = 0) -> DataSamples:
    """``per_class`` seeded training images of each of the first ``max_classes`` classes, and the same
    images through the datamodule's train augmentation (seeded, the global RNG left as it was)."""
    datamodule.setup()
    labels = datamodule.splits["train"].labels.numpy()
    rng = np.random.default_rng(seed)
    classes = range(min(len(datamodule.class_names), max_classes))
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class].tolist() for c in classes]
    images, _ = datamodule.dataset("train").__getitems__([i for row in picks for i in row])
    images = datamodule.to_float(images)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        augmented = datamodule.augment(images).clamp(0, 1) if datamodule.augment is not None else images
    names = list(datamodule.class_names)
    return DataSamples(
        images=images.cpu(),
        augmented=augmented.cpu(),
        counts=[len(row) for row in picks],
        class_names=[names[c] for c in classes],
        per_class=per_class,
        split_counts={
            split: np.bincount(data.labels.numpy(), minlength=len(names)) for split, data in datamodule.splits.items()
        },
        all_class_names=names,
    )


def draw_data_plots(samples: DataSamples, out_dir: str | Path) -> list[Path]:
    """Write ``samples.png``, ``samples_augmented.png`` and ``class_distribution.png``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _image_grid(samples, samples.images, "Training samples per class", out_dir / "samples.png"),
        _image_grid(
            samples, samples.augmented, "The same samples after train augmentation", out_dir / "samples_augmented.png"
        ),
        _class_distribution(samples, out_dir / "class_distribution.png"),
    ]


def plot_data(
    datamodule: ImageDataModule, out_dir: str | Path, per_class: int = 6, max_classes: int = 20, seed: int = 0
) -> list[Path]:
    """Sample and draw in one call."""
    return draw_data_plots(sample_data(datamodule, per_class, max_classes, seed), out_dir)


def start_data_plots(datamodule: ImageDataModule, out_dir: str | Path) -> threading.Thread:
    """Sample now, draw in a background thread (so drawing overlaps the first training steps instead
    of delaying them); join the thread before the run ends. A failed drawing is a warning, not a failed run."""
    samples = sample_data(datamodule)

    def draw() -> None:
        try:
            draw_data_plots(samples, out_dir)
        except Exception as error:  # the plots are a convenience; the run goes on without them
            log.warning("could not draw the data plots: %s", error)

    thread = threading.Thread(target=draw, name="cnnlab-data-plots", daemon=True)
    thread.start()
    return thread


def _image_grid(samples: DataSamples, images: torch.Tensor, title: str, path: Path) -> Path:
    """One row per class, class name on the left: the images are tiled into one mosaic drawn by a
    single ``imshow`` (a subplot per image made start-up seconds slower)."""
    size, gap, per_class = images.shape[-1], 2, samples.per_class
    cell = size + gap
    mosaic = np.ones((len(samples.counts) * cell - gap, per_class * cell - gap, images.shape[1]), dtype=np.float32)
    pixels = images.permute(0, 2, 3, 1).float().numpy()
    start = 0
    for row, count in enumerate(samples.counts):
        for col in range(count):
            mosaic[row * cell : row * cell + size, col * cell : col * cell + size] = pixels[start + col]
        start += count
    scale = max(1.3 / 64 * size, 0.6)
    fig = Figure(figsize=(scale * per_class + 1.5, scale * len(samples.counts) + 0.6))
    ax = fig.subplots()
    ax.imshow(mosaic.squeeze(-1) if mosaic.shape[-1] == 1 else mosaic, cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([row * cell + size / 2 for row in range(len(samples.counts))], samples.class_names, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _class_distribution(samples: DataSamples, path: Path) -> Path:
    """Horizontal grouped bars: images per class in each split."""
    names, splits = samples.all_class_names, list(samples.split_counts)
    height = 0.8 / len(splits)
    fig = Figure(figsize=(8, max(3.0, 0.25 * len(names) * len(splits) / 2 + 1)))
    ax = fig.subplots()
    positions = np.arange(len(names))
    for k, split in enumerate(splits):
        counts = samples.split_counts[split]
        ax.barh(positions + k * height, counts, height=height, label=f"{split} ({counts.sum():,})")
    ax.set_yticks(positions + height * (len(splits) - 1) / 2, names, fontsize=7 if len(names) > 30 else 9)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title("Class distribution of each split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
