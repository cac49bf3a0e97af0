"""The shared DataModule: splits held as uint8 tensors, served by index, made float and augmented on
the device the model trains on (train split only)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split: images (N, C, H, W) uint8, labels (N,) int64, and where each image came from.

    ``images`` is None for splits served from files (``data.in_memory=false``); ``sources`` then holds
    the paths, relative to the data root.
    """

    images: torch.Tensor | None
    labels: torch.Tensor
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


class TensorImageDataset(Dataset):
    """Serves a :class:`Split` a whole batch at a time (``__getitems__``), with no per-image Python work."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[index], self.split.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select: ~15x faster than advanced indexing (images[index]) on uint8 CPU tensors
        index = torch.as_tensor(indices, device=self.split.labels.device)
        return self.split.images.index_select(0, index), self.split.labels.index_select(0, index)


class EpochShuffleSampler(Sampler[int]):
    """A new order every epoch, drawn from (seed, epoch) alone: a run resumed at epoch k sees the same
    order as the uninterrupted run did."""

    def __init__(self, size: int, seed: int, epoch: Callable[[], int]) -> None:
        self.size, self.seed, self.epoch = size, seed, epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch())
        return iter(torch.randperm(self.size, generator=generator).tolist())


def normalize(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor | None, std: Sequence[float] | torch.Tensor | None
) -> torch.Tensor:
    """(images - mean) / std per channel; unchanged when no mean is given."""
    if mean is None:
        return images
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


def keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate for :class:`TensorImageDataset`: the batch is already stacked."""
    return batch


class ImageDataModule(LightningDataModule):
    """Base class. Subclasses implement :meth:`load_splits` and set ``class_names``.

    Batches arrive on the device as uint8 and become float in [0, 1] there; the train split alone is
    augmented (per sample, batched), then optional mean/std normalization is applied to every split.
    """

    def __init__(
        self,
        root: str | Path = "data",
        img_size: int = 32,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        augment: nn.Module | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        download: bool = False,
        output_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.img_size = img_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.mean = None if mean is None else torch.tensor(mean).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(1, -1, 1, 1)
        self.download = download
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.class_names: list[str] = []
        self.splits: dict[str, Split] = {}
        self._device_splits: dict[str, Split] = {}

    # -- what subclasses provide -------------------------------------------------------------
    def load_splits(self) -> dict[str, Split]:
        """Return the train/val/test splits as uint8 tensors of size ``img_size``."""
        raise NotImplementedError

    @property
    def in_chans(self) -> int:
        return 3

    # -- Lightning hooks ------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = self.load_splits()
        self._log_and_save_summary()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    def dataset(self, split: str) -> Dataset:
        """The split as a dataset whose ``__getitems__`` returns a stacked (uint8 images, labels) batch."""
        return TensorImageDataset(self._on_device(split))

    def _on_device(self, name: str) -> Split:
        """The split, moved once to the trainer's GPU when there is one (and no loader workers): batches
        are then gathered on the device and nothing is copied per step."""
        split = self.splits[name]
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type == "cpu" or self.num_workers:
            return split
        if name not in self._device_splits:
            self._device_splits[name] = Split(split.images.to(device), split.labels.to(device), split.sources)
        return self._device_splits[name]

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        dataset = self.dataset(split)
        sampler = EpochShuffleSampler(len(dataset), self.seed, self._current_epoch) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            # its own generator for worker seeds, so making an iterator never draws from the global RNG
            # (which would shift augmentation depending on when the iterator is made, e.g. on resume)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.model_inputs(batch, augment=self.trainer is not None and self.trainer.training)

    def model_inputs(self, batch: tuple[torch.Tensor, torch.Tensor], augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A served (uint8 images, labels) batch as the model takes it: float in [0, 1], augmented when
        ``augment`` is true and the datamodule has an augmentation, then normalized."""
        images, labels = batch
        images = self.to_float(images)
        if augment and self.augment is not None:
            images = self.augment(images)
        return self.normalize(images), labels

    # -- preprocessing shared with evaluation and prediction ------------------------------------
    @staticmethod
    def to_float(images: torch.Tensor) -> torch.Tensor:
        """uint8 in [0, 255] to float32 in [0, 1]."""
        return images / 255 if images.dtype == torch.uint8 else images.float()  # one op: uint8 / int is float32

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.mean, self.std)

    def preprocessing(self) -> dict:
        """What evaluation and prediction must apply to raw RGB images to match training."""
        return {
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "mean": None if self.mean is None else self.mean.flatten().tolist(),
            "std": None if self.std is None else self.std.flatten().tolist(),
        }

    # -- bookkeeping ----------------------------------------------------------------------------
    def summary(self) -> dict:
        """Class names, split sizes and images per class of each split."""
        return {
            "class_names": self.class_names,
            "split_sizes": {name: len(split) for name, split in self.splits.items()},
            "per_class": {
                name: {self.class_names[c]: n for c, n in sorted(Counter(split.labels.tolist()).items())}
                for name, split in self.splits.items()
            },
        }

    def _log_and_save_summary(self) -> None:
        summary = self.summary()
        log.info("%s: %d classes, split sizes %s", type(self).__name__, len(self.class_names), summary["split_sizes"])
        log.info("images per class: %s", summary["per_class"])
        if self.output_dir is None:
            return
        data_dir = self.output_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        for name, split in self.splits.items():
            if split.sources:
                (data_dir / f"{name}_files.txt").write_text("\n".join(split.sources) + "\n")
