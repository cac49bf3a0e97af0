"""Plots of a run's data for a person to look at: sample images per class, the same images after the
train augmentation, and the class distribution of each split (PNGs, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cnnlab.data.base import ImageDataModule  # noqa: E402


def plot_data(
    datamodule: ImageDataModule, out_dir: str | Path, per_class: int = 6, max_classes: int = 20, seed: int = 0
) -> list[Path]:
    """Write ``samples.png``, ``samples_augmented.png`` and ``class_distribution.png`` to ``out_dir``.

    Samples are ``per_class`` seeded training images of each of the first ``max_classes`` classes;
    the augmented grid shows those same images through the datamodule's train augmentation.
    Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    titles = [datamodule.class_names[c] for c in classes]
    counts = [len(row) for row in picks]
    return [
        _image_grid(images, counts, titles, per_class, "Training samples per class", out_dir / "samples.png"),
        _image_grid(augmented, counts, titles, per_class, "The same samples after train augmentation",
                    out_dir / "samples_augmented.png"),
        _class_distribution(datamodule, out_dir / "class_distribution.png"),
    ]


def _image_grid(images: torch.Tensor, counts: list[int], titles: list[str], per_class: int, title: str, path: Path) -> Path:
    """One row per class, ``counts[row]`` images in it, class name on the left."""
    rows = len(counts)
    fig, axes = plt.subplots(rows, per_class, figsize=(1.3 * per_class + 1.5, 1.3 * rows + 0.6), squeeze=False)
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()
    start = 0
    for row, (count, name) in enumerate(zip(counts, titles)):
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < count:
                ax.imshow(pixels[start + col])
            else:
                ax.axis("off")
        axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        start += count
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _class_distribution(datamodule: ImageDataModule, path: Path) -> Path:
    """Horizontal grouped bars: images per class in each split."""
    names = datamodule.class_names
    splits = list(datamodule.splits)
    height = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.25 * len(names) * len(splits) / 2 + 1)))
    positions = np.arange(len(names))
    for k, split in enumerate(splits):
        counts = np.bincount(datamodule.splits[split].labels.numpy(), minlength=len(names))
        ax.barh(positions + k * height, counts, height=height, label=f"{split} ({counts.sum():,})")
    ax.set_yticks(positions + height * (len(splits) - 1) / 2, names, fontsize=7 if len(names) > 30 else 9)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title("Class distribution of each split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
