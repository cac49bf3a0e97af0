"""Tiny datasets written in each real on-disk format, shared by the data, experiment and search tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

EUROSAT_CLASSES = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]
EUROSAT_COUNTS = [3000, 3000, 3000, 2500, 2500, 2000, 2500, 3000, 2500, 3000]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_rgb(rng: np.random.Generator, size: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def write_eurosat(root: Path, per_class: int = 10) -> Path:
    """torchvision's EuroSAT layout: root/eurosat/2750/<Class>/<Class>_<n>.jpg, 64x64."""
    rng = np.random.default_rng(0)
    for name in EUROSAT_CLASSES:
        folder = root / "eurosat" / "2750" / name
        folder.mkdir(parents=True)
        for n in range(1, per_class + 1):
            random_rgb(rng, 64).save(folder / f"{name}_{n}.jpg", quality=95)
    return root


def write_cifar10(root: Path, per_batch: int = 20, test: int = 20) -> Path:
    """The cifar-10-batches-py pickles: dicts with 'data' (N, 3072) uint8 rows (R, G, B planes) and
    'labels' (the originals are Python 2 pickles whose keys read back as these str with latin1)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(path: Path, n: int) -> None:
        entry = {
            "batch_label": path.name,
            "labels": [i % 10 for i in range(n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        path.write_bytes(pickle.dumps(entry, protocol=2))

    for k in range(1, 6):
        batch(folder / f"data_batch_{k}", per_batch)
    batch(folder / "test_batch", test)
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, protocol=2)
    )
    return root


def write_fruits360(
    root: Path, classes=("Apple Braeburn", "Banana", "Cherry 1"), train: int = 10, test: int = 4
) -> Path:
    """Fruits-360: root/Training/<Class>/*.jpg and root/Test/<Class>/*.jpg, 100x100."""
    rng = np.random.default_rng(0)
    for part, n in (("Training", train), ("Test", test)):
        for name in classes:
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                random_rgb(rng, 100).save(root / part / name / f"r_{i}_100.jpg")
    return root


def write_image_folder(root: Path, per_class: int = 10, classes=("blight", "healthy", "rust")) -> Path:
    """<Class>/* with alternating jpg/png of different sizes, plus one corrupt file."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            random_rgb(rng, 40 + i).save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    (root / classes[0] / "corrupt.jpg").write_bytes(b"not an image at all")
    return root


def write_all(root: Path) -> Path:
    """Every dataset where ``paths.data_dir=root`` makes the data configs look: eurosat/, cifar-10-batches-py/,
    fruits-360/ and images/ (the imagefolder default)."""
    write_eurosat(root, per_class=5)
    write_cifar10(root, per_batch=10, test=10)
    write_fruits360(root / "fruits-360", train=5, test=2)
    write_image_folder(root / "images", per_class=10)
    return root
