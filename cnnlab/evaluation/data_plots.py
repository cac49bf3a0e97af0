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
    """One row per class, ``counts[row]`` images in it, class name on the left: the images are tiled
    into one mosaic drawn by a single ``imshow`` (a subplot per image made start-up seconds slower)."""
    size, gap = images.shape[-1], 2
    cell = size + gap
    mosaic = np.ones((len(counts) * cell - gap, per_class * cell - gap, images.shape[1]), dtype=np.float32)
    pixels = images.permute(0, 2, 3, 1).float().cpu().numpy()
    start = 0
    for row, count in enumerate(counts):
        for col in range(count):
            mosaic[row * cell:row * cell + size, col * cell:col * cell + size] = pixels[start + col]
        start += count
    scale = max(1.3 / 64 * size, 0.6)
    fig, ax = plt.subplots(figsize=(scale * per_class + 1.5, scale * len(counts) + 0.6))
    ax.imshow(mosaic.squeeze(-1) if mosaic.shape[-1] == 1 else mosaic, cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([row * cell + size / 2 for row in range(len(counts))], titles, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title)
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
