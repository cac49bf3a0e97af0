"""torchvision's classification datasets by name (``data=torchvision data.name=FashionMNIST``), on their
official splits, fetched by torchvision's own download code (``data.download=true``).

Each dataset's constructor splits differently (``train=True/False``, ``split="train"/"test"/"val"``,
``split="trainval"``): :data:`DATASETS` records how, with the native image size where all its images
share one (the default ``img_size``) or the size images of mixed sizes are resized to. Datasets torchvision
holds as arrays (the MNIST family, CIFAR, SVHN, STL-10) load straight from their files; datasets of image
files (Flowers102, Food101, OxfordIIITPet, DTD, GTSRB) are decoded once into the same memory-mapped cache
as every image folder. The MNIST family stays single-channel unless the model needs RGB (``rgb``).

A root that already holds the files is used without download: torchvision's own layout
(``<root>/FashionMNIST/raw/``), or for the MNIST family the IDX files (``.gz`` or not) directly in the root,
as Debian's ``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist/``. Such a
folder is shown to torchvision through a view in the cache directory (links, or the decompressed files):
nothing is ever written into the user's data folder.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets

from cnnlab.data.base import Split
from cnnlab.data.cache import cache_dir, file_lock, lock_file
from cnnlab.data.download import download_once
from cnnlab.data.errors import DataError
from cnnlab.data.folder import FolderDataModule
from cnnlab.data.images import ImageFiles, resize_images, warn_if_upscaled
from cnnlab.data.splits import stratified_holdout

log = logging.getLogger(__name__)

TRAIN_FLAG = {"train": {"train": True}, "test": {"train": False}}
TRAIN_TEST = {"train": {"split": "train"}, "test": {"split": "test"}}
TRAIN_VAL_TEST = {**TRAIN_TEST, "val": {"split": "val"}}
MNIST_FAMILY = (datasets.MNIST, datasets.FashionMNIST, datasets.KMNIST, datasets.EMNIST)
STL10_UNLABELED = "unlabeled_X.bin"


@dataclass(frozen=True)
class Spec:
    """How cnnlab opens one torchvision dataset: its class; the constructor arguments of each official
    split (a ``val`` entry when the dataset has its own); ``arrays``: torchvision holds the images as
    arrays of one size, ``size`` (else they are image files of mixed sizes, resized to ``size`` by
    default); and the constructor option ``data.variant`` sets (EMNIST's split, DTD's partition), with its
    default (None: required)."""

    cls: type
    splits: dict[str, dict[str, Any]]
    size: int
    arrays: bool = True
    variant: str | None = None
    variant_default: Any = None
    variants: tuple = field(default=())


DATASETS: dict[str, Spec] = {
    "MNIST": Spec(datasets.MNIST, TRAIN_FLAG, 28),
    "FashionMNIST": Spec(datasets.FashionMNIST, TRAIN_FLAG, 28),
    "KMNIST": Spec(datasets.KMNIST, TRAIN_FLAG, 28),
    "EMNIST": Spec(datasets.EMNIST, TRAIN_FLAG, 28, variant="split", variants=datasets.EMNIST.splits),
    "CIFAR10": Spec(datasets.CIFAR10, TRAIN_FLAG, 32),
    "CIFAR100": Spec(datasets.CIFAR100, TRAIN_FLAG, 32),
    "SVHN": Spec(datasets.SVHN, TRAIN_TEST, 32),
    "STL10": Spec(datasets.STL10, TRAIN_TEST, 96),
    "Flowers102": Spec(datasets.Flowers102, TRAIN_VAL_TEST, 128, arrays=False),
    "Food101": Spec(datasets.Food101, TRAIN_TEST, 128, arrays=False),
    "OxfordIIITPet": Spec(
        datasets.OxfordIIITPet, {"train": {"split": "trainval"}, "test": {"split": "test"}}, 128, arrays=False
    ),
    "DTD": Spec(
        datasets.DTD,
        TRAIN_VAL_TEST,
        128,
        arrays=False,
        variant="partition",
        variant_default=1,
        variants=tuple(range(1, 11)),
    ),
    "GTSRB": Spec(datasets.GTSRB, TRAIN_TEST, 32, arrays=False),
}


def find_spec(name: str) -> tuple[str, Spec]:
    """The dataset called ``name`` (any case); :class:`DataError` listing the known names otherwise."""
    for known, spec in DATASETS.items():
        if known.lower() == name.lower().replace("-", ""):
            return known, spec
    raise DataError(f"data.name={name} is not a dataset cnnlab knows; choose one of {', '.join(DATASETS)}")


def presence_only(cls: type) -> type:
    """``cls`` checking that its files are present rather than their md5 sums on every run (hashing
    SVHN's or STL-10's hundreds of megabytes each time); downloads still go through ``cls``, which
    checks them. STL-10's 2.6 GB of unlabeled images, which cnnlab does not train on, need not be there (users
    delete them). Same class name: torchvision derives folder names from it."""
    overrides: dict[str, Any] = {}
    for table in ("train_list", "test_list"):
        if table in dir(cls):
            overrides[table] = [[entry[0], None] for entry in getattr(cls, table) if entry[0] != STL10_UNLABELED]
    if isinstance(getattr(cls, "meta", None), dict) and "md5" in cls.meta:
        overrides["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):
        overrides["split_list"] = {k: [v[0], v[1], None] for k, v in cls.split_list.items()}
    if hasattr(cls, "_file_dict"):
        overrides["_file_dict"] = {k: (v[0], None) for k, v in cls._file_dict.items()}
    return type(cls.__name__, (cls,), overrides)


def idx_file_names(spec: Spec, options: dict[str, Any]) -> list[str]:
    """The uncompressed IDX files an MNIST-family dataset reads from ``<root>/<Name>/raw/``."""
    if spec.cls is datasets.EMNIST:
        return [
            f"emnist-{options['split']}-{part}-{kind}-ubyte"
            for part in ("train", "test")
            for kind in ("images-idx3", "labels-idx1")
        ]
    return [os.path.splitext(os.path.basename(url))[0] for url, _ in spec.cls.resources]


def _source_url(cls: type) -> str:
    """Where torchvision downloads ``cls`` from, for the offline message."""
    if hasattr(cls, "mirrors"):
        return cls.mirrors[0]
    if hasattr(cls, "split_list"):  # SVHN
        return cls.split_list["train"][0]
    for attribute in ("url", "_URL", "_download_url_prefix", "base_url"):
        if isinstance(getattr(cls, attribute, None), str):
            return getattr(cls, attribute)
    return f"torchvision.datasets.{cls.__name__}'s download URL"


class TorchvisionDataModule(FolderDataModule):
    """torchvision dataset ``name`` on its official train/test split; validation is the dataset's own
    val split where it has one (Flowers102, DTD), else a seeded stratified ``val_fraction`` of train.

    ``img_size=None`` (the default) keeps the native size of datasets whose images share one and resizes
    the others to the size in :data:`DATASETS`. ``variant`` is EMNIST's split (``balanced``, ``digits``,
    ...) or DTD's partition (1..10). ``rgb`` repeats single-channel images to three channels (set by
    ``cnnlab.train`` for pretrained backbones, whose first layer takes RGB).
    """

    def __init__(
        self,
        name: str = "FashionMNIST",
        variant: str | int | None = None,
        val_fraction: float = 0.1,
        img_size: int | None = None,
        **kwargs,
    ) -> None:
        self.name, self.spec = find_spec(name)
        size = self.spec.size if img_size is None else img_size
        super().__init__(img_size=size, **kwargs)
        if img_size is None and not self.spec.arrays:
            log.info(
                "%s's images differ in size: resized to %dx%d (set data.img_size to choose)", self.name, size, size
            )
        self.variant = self.spec.variant_default if variant is None else variant
        if self.spec.variant is None and variant is not None:
            raise DataError(f"data.variant={variant} is not an option of {self.name}; drop it")
        if self.spec.variant is not None and self.variant not in self.spec.variants:
            raise DataError(
                f"{self.name} needs data.variant=<its {self.spec.variant}>, one of "
                f"{', '.join(map(str, self.spec.variants))} (got {self.variant})"
            )
        self.val_fraction = val_fraction
        self._native_chans = 1 if self.spec.cls in MNIST_FAMILY else 3

    @property
    def in_chans(self) -> int:
        return 3 if self.rgb else self._native_chans

    @property
    def options(self) -> dict[str, Any]:
        """The constructor options every split shares (``data.variant``)."""
        return {} if self.spec.variant is None else {self.spec.variant: self.variant}

    @property
    def layout(self) -> str:
        if self.spec.cls in MNIST_FAMILY:
            files = ", ".join(idx_file_names(self.spec, self.options))
            return f"{self.root}/{self.name}/raw/ or {self.root}/ holding {files} (.gz or not)"
        return f"{self.root} in torchvision.datasets.{self.name}'s layout"

    # -- finding the files ----------------------------------------------------------------------
    def data_root(self) -> Path | None:
        """The root torchvision opens: ``root`` when it holds the dataset in torchvision's layout, a view
        in the cache directory when ``root`` holds MNIST-family files flat (or gzipped), else None."""
        if self.spec.cls not in MNIST_FAMILY:
            return self.root if self._opens(self.root) else None
        names = idx_file_names(self.spec, self.options)
        raw = self.root / self.name / "raw"
        if all((raw / name).is_file() for name in names):
            return self.root
        found = {}
        for name in names:
            candidates = [
                folder / f"{name}{ext}" for folder in (raw, self.root / self.name, self.root) for ext in ("", ".gz")
            ]
            found[name] = next((path for path in candidates if path.is_file()), None)
        if None in found.values():
            return None
        return self._raw_view(found)

    def _raw_view(self, found: dict[str, Path]) -> Path:
        """A root in the cache directory whose ``<Name>/raw/`` links to the files of ``found`` (or holds
        them decompressed), made once under a lock."""
        place = hashlib.sha256(str(self.root.absolute()).encode()).hexdigest()[:12]
        view = cache_dir() / "torchvision" / f"{self.name}-{place}"
        raw = view / self.name / "raw"
        with file_lock(lock_file("view", self.root), f"linking {self.root} into {view}"):
            raw.mkdir(parents=True, exist_ok=True)
            for name, source in found.items():
                target = raw / name
                if target.exists() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
                    continue
                tmp = raw / f".{name}.{os.getpid()}.tmp"
                if source.suffix == ".gz":
                    log.info("decompressing %s into %s", source, target)
                    with gzip.open(source, "rb") as packed, open(tmp, "wb") as plain:
                        shutil.copyfileobj(packed, plain)
                else:
                    tmp.symlink_to(source.absolute())
                os.replace(tmp, target)
        return view

    def _opens(self, root: Path) -> bool:
        try:
            self._open(root, "test")
        except (RuntimeError, OSError):
            return False
        return True

    def _open(self, root: Path, split: str) -> Any:
        """torchvision's dataset object of ``split`` (train, val, test), files checked for presence only."""
        return presence_only(self.spec.cls)(str(root), **self.spec.splits[split], **self.options)

    def _opened_root(self) -> Path:
        root = self.data_root()
        if root is None:
            action = "set data.download=true to fetch it" if not self.download else "its download did not complete"
            raise DataError(f"{self.name} is not in {self.root}: {action}, or place it as {self.layout}")
        return root

    # -- Lightning's data lifecycle -------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.download:
            download_once(
                self.root,
                lambda: self.data_root() is not None,
                self.name,
                _source_url(self.spec.cls),
                self.layout,
                lambda: [
                    self.spec.cls(str(self.root), download=True, **kw, **self.options)
                    for kw in self.spec.splits.values()
                ],
            )
        super().prepare_data()

    def scan(self) -> list[ImageFiles]:
        """The file lists of image-file datasets, one per official split; none for array datasets."""
        if self.spec.arrays:
            return []
        root = self._opened_root()
        lists = []
        for split in self.spec.splits:
            dataset = self._open(root, split)
            if hasattr(dataset, "_samples"):  # GTSRB
                paths, labels = zip(*dataset._samples) if dataset._samples else ((), ())
            else:
                paths = getattr(dataset, "_image_files", None) or dataset._images
                labels = dataset._labels
            labels = np.asarray(labels, dtype=np.int64)
            lists.append(
                ImageFiles(
                    root,
                    root / f"{self.name}-{split}",  # names its cache; each split its own
                    [Path(p).relative_to(root).as_posix() for p in paths],
                    labels,
                    self._class_names(dataset, labels),
                )
            )
        return lists

    def load_splits(self) -> dict[str, Split]:
        if self.spec.arrays:
            splits = self._array_splits()
        else:
            decoded = dict(zip(self.spec.splits, self.read_files()))
            splits = {name: part.whole() for name, part in decoded.items()}
        if "val" not in splits:
            keep, val = stratified_holdout(
                splits["train"].labels.numpy(), self.val_fraction, self.seed, self.class_names
            )
            splits["train"], splits["val"] = splits["train"].subset(keep), splits["train"].subset(val)
        return {name: splits[name] for name in ("train", "val", "test")}

    def _array_splits(self) -> dict[str, Split]:
        """The official splits of a dataset torchvision holds as arrays, at ``img_size``."""
        root = self._opened_root()
        splits = {}
        for split in self.spec.splits:
            dataset = self._open(root, split)
            labels = torch.as_tensor(np.asarray(dataset.targets if hasattr(dataset, "targets") else dataset.labels))
            images, labels = self._images(dataset), labels.to(torch.int64)
            self.class_names = self._class_names(dataset, labels.numpy())
            sources = [f"{self.name}/{split}[{i}]" for i in range(len(labels))]
            splits[split] = Split(images, labels, sources)
        if self.rgb and self._native_chans == 1:
            log.info("%s is single-channel: repeated to 3 channels, as the pretrained backbone takes RGB", self.name)
        return splits

    def _images(self, dataset: Any) -> torch.Tensor:
        """uint8 (N, C, img_size, img_size) of an array dataset: torchvision holds the MNIST family as
        (N, H, W) tensors, CIFAR as (N, H, W, C) arrays, SVHN and STL-10 as (N, C, H, W) arrays."""
        data = torch.as_tensor(np.asarray(dataset.data))
        if data.ndim == 3:
            data = data.unsqueeze(1)
            if self.spec.cls is datasets.EMNIST:
                data = data.transpose(2, 3)  # EMNIST's files store each image transposed
        elif data.shape[-1] == 3:
            data = data.permute(0, 3, 1, 2)
        warn_if_upscaled(data.shape[-1], self.img_size, self.name)
        data = resize_images(data.contiguous(), self.img_size)
        return data.expand(-1, 3, -1, -1).contiguous() if self.rgb and data.shape[1] == 1 else data

    @staticmethod
    def _class_names(dataset: Any, labels: np.ndarray) -> list[str]:
        names = getattr(dataset, "classes", None)
        return list(names) if names else [str(c) for c in range(int(labels.max(initial=0)) + 1)]
