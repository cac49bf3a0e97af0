"""Tiny datasets written in each real on-disk format, shared by the data, experiment and search tests."""

from __future__ import annotations

import gzip
import json
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


def class_pattern_images(rng: np.random.Generator, labels: np.ndarray, size: int, channels: int = 1) -> np.ndarray:
    """Learnable uint8 (N, size, size[, channels]) images: a bright square placed by the class over dim noise."""
    images = rng.integers(0, 60, (len(labels), size, size, channels), dtype=np.uint8)
    cell = size // 4
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 16, 4)
        images[i, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 255
    return images[..., 0] if channels == 1 else images


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format of the MNIST family: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, train: int = 100, test: int = 40, classes: int = 10, prefix: str = "") -> Path:
    """The four gzipped IDX files of MNIST/Fashion-MNIST/KMNIST (or EMNIST's with ``prefix``
    ``emnist-<split>-``) directly in ``folder``, as Debian's dataset-fashion-mnist installs them."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}
    names["test"] = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if prefix:
        names = {part: (f"{prefix}{part}-images-idx3-ubyte", f"{prefix}{part}-labels-idx1-ubyte") for part in names}
    for part, n in (("train", train), ("test", test)):
        labels = np.arange(n) % classes
        images_name, labels_name = names[part]
        (folder / f"{images_name}.gz").write_bytes(gzip.compress(idx_bytes(class_pattern_images(rng, labels, 28))))
        (folder / f"{labels_name}.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return folder


def write_cifar100(root: Path, train: int = 40, test: int = 20, classes: int = 4) -> Path:
    """cifar-100-python/{train,test,meta}: pickles with 'data' (N, 3072) rows, 'fine_labels', and the
    100 'fine_label_names' (only the first ``classes`` used)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, n in (("train", train), ("test", test)):
        labels = np.arange(n) % classes
        data = class_pattern_images(rng, labels, 32, 3).transpose(0, 3, 1, 2).reshape(n, 3072)
        entry = {"filenames": [f"{i}.png" for i in range(n)], "fine_labels": labels.tolist(), "data": data}
        (folder / part).write_bytes(pickle.dumps(entry, protocol=2))
    names = {"fine_label_names": [f"class_{c}" for c in range(100)], "coarse_label_names": []}
    (folder / "meta").write_bytes(pickle.dumps(names, protocol=2))
    return root


def write_svhn(root: Path, train: int = 40, test: int = 20) -> Path:
    """SVHN's cropped-digit .mat files: X (32, 32, 3, N) uint8, y (N, 1) with 10 standing for digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", train), ("test", test)):
        labels = np.arange(n) % 10
        images = class_pattern_images(rng, labels, 32, 3)
        savemat(
            root / f"{part}_32x32.mat",
            {"X": images.transpose(1, 2, 3, 0), "y": np.where(labels == 0, 10, labels)[:, None]},
        )
    return root


def write_gtsrb(root: Path, train: int = 6, test: int = 6, classes: int = 3) -> Path:
    """GTSRB: gtsrb/GTSRB/Training/<00000>/*.ppm and gtsrb/GTSRB/Final_Test/Images/*.ppm labelled by
    gtsrb/GT-final_test.csv (';'-separated), of mixed sizes as the real signs are."""
    rng = np.random.default_rng(0)
    base = root / "gtsrb"
    for c in range(classes):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        for i in range(train):
            random_rgb(rng, 30 + 3 * i).save(folder / f"{c:05d}_{i:05d}.ppm")
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(test * classes):
        random_rgb(rng, 40).save(images / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;40;40;1;1;39;39;{i % classes}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return root


def write_dtd(root: Path, classes=("banded", "dotted", "striped"), per_split: int = 2, partition: int = 1) -> Path:
    """DTD: dtd/dtd/images/<class>/<class>_<n>.jpg of mixed sizes, listed per split in
    dtd/dtd/labels/{train,val,test}<partition>.txt as '<class>/<file>' lines."""
    rng = np.random.default_rng(0)
    data = root / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True)
    n = 0
    for split in ("train", "val", "test"):
        lines = []
        for name in classes:
            (data / "images" / name).mkdir(parents=True, exist_ok=True)
            for _ in range(per_split):
                random_rgb(rng, 60 + 10 * (n % 3)).save(data / "images" / name / f"{name}_{n:04d}.jpg")
                lines.append(f"{name}/{name}_{n:04d}.jpg")
                n += 1
        (data / "labels" / f"{split}{partition}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_pattern_jpgs(paths: list[Path], labels: list[int], seed: int = 0) -> None:
    """JPEG files of mixed square sizes (60 to 80 px) holding :func:`class_pattern_images`' bright square
    for each label, so a test can check that labels and pixels stay paired after decoding and resizing."""
    rng = np.random.default_rng(seed)
    for i, (path, label) in enumerate(zip(paths, labels)):
        path.parent.mkdir(parents=True, exist_ok=True)
        (pixels,) = class_pattern_images(rng, np.array([label]), 60 + 4 * (i % 6), 3)
        Image.fromarray(pixels).save(path, quality=95)


def write_stl10(root: Path, train: int = 30, test: int = 20, unlabeled: int = 3, classes: int = 10) -> Path:
    """STL-10's binaries in root/stl10_binary/: {train,test,unlabeled}_X.bin hold uint8 96x96 RGB images
    each stored channel by channel in column-major order (no unlabeled_X.bin with ``unlabeled=0``),
    {train,test}_y.bin the labels 1..10, and class_names.txt one name a line."""
    rng = np.random.default_rng(0)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for part, n in (("train", train), ("test", test), ("unlabeled", unlabeled))[: 3 if unlabeled else 2]:
        labels = np.arange(n) % classes
        images = class_pattern_images(rng, labels, 96, 3)  # (N, H, W, C)
        (folder / f"{part}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())  # (N, C, W, H)
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return root


def write_flowers102(root: Path, splits: dict[str, int] | None = None, classes: int = 4) -> Path:
    """Flowers-102 in root/flowers-102/: jpg/image_<id:05d>.jpg (ids from 1), imagelabels.mat 'labels'
    (1-based class of each id) and setid.mat 'trnid', 'valid', 'tstid' (the ids of each split), the ids of
    the splits interleaved as in the real files."""
    from scipy.io import savemat

    sizes = splits or {"trnid": 8, "valid": 8, "tstid": 12}
    base = root / "flowers-102"
    total = sum(sizes.values())
    labels = np.arange(total) % classes
    write_pattern_jpgs([base / "jpg" / f"image_{i:05d}.jpg" for i in range(1, total + 1)], labels.tolist())
    ids = np.arange(1, total + 1)
    order = np.random.default_rng(0).permutation(ids)
    bounds = np.cumsum([0, *sizes.values()])
    setid = {key: np.sort(order[a:b]) for key, a, b in zip(sizes, bounds[:-1], bounds[1:])}
    savemat(base / "imagelabels.mat", {"labels": (labels + 1)[None, :]})
    savemat(base / "setid.mat", {key: value[None, :] for key, value in setid.items()})
    return root


def write_food101(root: Path, classes=("tacos", "apple_pie", "ramen"), train: int = 4, test: int = 2) -> Path:
    """Food-101 in root/food-101/: images/<class>/<id>.jpg listed by meta/train.json and meta/test.json
    ({class: ["<class>/<id>", ...]}, classes in the files' order, not sorted; labels follow the sorted names)."""
    base = root / "food-101"
    (base / "meta").mkdir(parents=True)
    ordered = sorted(classes)
    image_id = 0
    for part, n in (("train", train), ("test", test)):
        listing = {}
        for name in classes:
            listing[name] = [f"{name}/{image_id + k}" for k in range(n)]
            image_id += n
        paths = [base / "images" / f"{entry}.jpg" for entries in listing.values() for entry in entries]
        labels = [ordered.index(name) for name, entries in listing.items() for _ in entries]
        write_pattern_jpgs(paths, labels, seed=len(part))
        (base / "meta" / f"{part}.json").write_text(json.dumps(listing))
    return root


PET_BREEDS = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # (file prefix, species: 1 cat, 2 dog)


def write_oxford_pets(root: Path, trainval: int = 4, test: int = 3) -> Path:
    """Oxford-IIIT Pet in root/oxford-iiit-pet/: images/<Breed>_<n>.jpg (cat breeds capitalised, dog breeds
    not) and annotations/{trainval,test}.txt with '<image> <class id> <species> <breed id>' lines (1-based)."""
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    n = 1
    for part, per_class in (("trainval", trainval), ("test", test)):
        lines, paths, labels = [], [], []
        for _ in range(per_class):
            for label, (breed, species) in enumerate(PET_BREEDS):
                breed_id = [s for _, s in PET_BREEDS[: label + 1]].count(species)  # numbered within its species
                lines.append(f"{breed}_{n} {label + 1} {species} {breed_id}")
                paths.append(base / "images" / f"{breed}_{n}.jpg")
                labels.append(label)
                n += 1
        write_pattern_jpgs(paths, labels, seed=len(part))
        (base / "annotations" / f"{part}.txt").write_text("\n".join(lines) + "\n")
    return root
