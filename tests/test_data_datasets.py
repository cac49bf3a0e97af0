"""The dataset DataModules on tiny datasets written in each real on-disk format."""

from __future__ import annotations

import logging
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from fakedata import (
    CIFAR_CLASSES,
    EUROSAT_CLASSES,
    EUROSAT_COUNTS,
    write_cifar10,
    write_eurosat,
    write_fruits360,
    write_image_folder,
)
from PIL import Image
from torch import nn

from cnnlab.data.augment import BatchAugment
from cnnlab.data.cifar10 import CIFAR10DataModule
from cnnlab.data.errors import DataError
from cnnlab.data.eurosat import EUROSAT_URL, EuroSATDataModule
from cnnlab.data.fruits360 import Fruits360DataModule
from cnnlab.data.imagefolder import ImageFolderDataModule
from cnnlab.data.images import decode_image
from cnnlab.data.splits import stratified_split


def datamodule(cls, root: Path, **kwargs):
    """A datamodule through Lightning's data lifecycle: prepare_data, then setup."""
    dm = cls(root=root, seed=kwargs.pop("seed", 0), batch_size=kwargs.pop("batch_size", 16), **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def per_class(split) -> list[int]:
    return np.bincount(split.labels.numpy()).tolist()


# -- split arithmetic -------------------------------------------------------------------------------
def test_eurosat_split_sizes_on_the_real_label_counts():
    labels = np.repeat(np.arange(10), EUROSAT_COUNTS)
    train, val, test = stratified_split(labels, (0.6, 0.2, 0.2), seed=42)
    assert (len(train), len(val), len(test)) == (16_200, 5_400, 5_400)
    assert len(np.unique(np.concatenate([train, val, test]))) == 27_000
    assert np.abs(np.bincount(labels[test]) - 0.2 * np.array(EUROSAT_COUNTS)).max() <= 1


# -- EuroSAT --------------------------------------------------------------------------------------
def test_eurosat_splits_stratified_seeded_and_cached(tmp_path, cache_dir):
    root = write_eurosat(tmp_path / "data")
    dm = datamodule(EuroSATDataModule, root, img_size=64)
    assert dm.class_names == EUROSAT_CLASSES
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 60, "val": 20, "test": 20}
    assert per_class(dm.splits["train"]) == [6] * 10 and per_class(dm.splits["test"]) == [2] * 10
    train = dm.splits["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 64, 64)
    first = root / train.sources[0]
    assert train.sources[0].startswith("eurosat/2750/") and first.exists()
    assert torch.equal(train.images[0], torch.from_numpy(decode_image(first, 64)).permute(2, 0, 1))

    again = datamodule(EuroSATDataModule, root)
    other = datamodule(EuroSATDataModule, root, seed=1)
    assert all(again.splits[s].sources == dm.splits[s].sources for s in dm.splits)
    assert other.splits["test"].sources != dm.splits["test"].sources
    assert len(list(cache_dir.glob("images-v*/2750-*-64px-*.npy"))) == 1  # one cache, shared by every seed


def test_eurosat_missing_without_download_names_layout(tmp_path):
    with pytest.raises(DataError, match=r"eurosat/2750/<Class>/<Class>_<n>\.jpg"):
        datamodule(EuroSATDataModule, tmp_path, download=False)


def test_eurosat_offline_download_fails_fast_with_one_message(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as error:
        datamodule(EuroSATDataModule, tmp_path, download=True)
    message = str(error.value)
    assert "EuroSAT" in message and EUROSAT_URL in message and "eurosat/2750/<Class>" in message


class RecordBatches(L.LightningModule):
    """A linear model that keeps the batches each stage receives."""

    def __init__(self, num_classes: int, size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, num_classes))
        self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}

    def _step(self, stage, batch):
        self.seen[stage].append(batch[0].detach().clone())
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def training_step(self, batch, _):
        return self._step("train", batch)

    def validation_step(self, batch, _):
        self._step("val", batch)

    def test_step(self, batch, _):
        self._step("test", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_augmentation_only_on_train(tmp_path):
    root = write_eurosat(tmp_path / "data", per_class=5)
    dm = datamodule(
        EuroSATDataModule, root, augment=BatchAugment(hflip=0.5, vflip=0.5, degrees=45), eval_batch_size=100
    )
    model = RecordBatches(10, dm.img_size)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    for stage in ("val", "test"):
        assert torch.equal(torch.cat(model.seen[stage]), dm.to_float(dm.splits[stage].images))
    raw = dm.to_float(dm.splits["train"].images).flatten(1)
    augmented = torch.cat(model.seen["train"]).flatten(1)
    assert len(augmented) == len(raw)
    assert torch.cdist(augmented, raw).min() > 0.1  # no training image reached the model unchanged


def test_model_inputs_augments_only_when_asked_and_normalizes(tmp_path):
    """What on_after_batch_transfer applies (and benchmarks/bench.py's feed mode calls directly)."""
    root = write_eurosat(tmp_path / "data", per_class=5)
    dm = datamodule(EuroSATDataModule, root, augment=BatchAugment(hflip=1.0), mean=[0.5] * 3, std=[0.25] * 3)
    images, labels = next(iter(dm.train_dataloader()))
    plain = (images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(dm.model_inputs((images, labels), augment=False)[0], plain)
    flipped, same_labels = dm.model_inputs((images, labels), augment=True)
    assert torch.allclose(flipped, plain.flip(3)) and torch.equal(same_labels, labels)


def test_pil_path_gives_the_same_batches_and_splits(tmp_path):
    root = write_image_folder(tmp_path / "images")  # with a corrupt file, listed by both paths alike
    cached = datamodule(ImageFolderDataModule, root, img_size=32, eval_batch_size=8)
    lazy = datamodule(ImageFolderDataModule, root, img_size=32, eval_batch_size=8, in_memory=False, num_workers=1)
    lazy_images, lazy_labels = next(iter(lazy.test_dataloader()))
    images, labels = next(iter(cached.test_dataloader()))
    assert lazy_images.dtype == images.dtype == torch.uint8 and lazy_images.shape == images.shape == (3, 3, 32, 32)
    assert torch.equal(lazy_labels, labels) and torch.equal(lazy_images, images)
    assert all(lazy.splits[s].sources == cached.splits[s].sources for s in ("train", "val", "test"))
    assert lazy.summary()["unreadable_files"] == cached.summary()["unreadable_files"] != {}
    assert lazy.on_after_batch_transfer((lazy_images, lazy_labels), 0)[0].dtype == torch.float32


# -- image folders and bad data -------------------------------------------------------------------
def test_image_folder_skips_corrupt_and_converts_odd_modes(tmp_path, caplog):
    root = write_image_folder(tmp_path / "images")
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(root / "healthy" / "gray.jpg")
    Image.fromarray(np.zeros((20, 20, 4), np.uint8)).save(root / "healthy" / "rgba.png")
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(root / "rust" / "sixteen_bit.png")
    (root / "rust" / "empty.png").write_bytes(b"")
    good = root / "blight" / "1.jpg"
    (root / "blight" / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        dm = datamodule(ImageFolderDataModule, root, img_size=24)
    assert sum(len(s) for s in dm.splits.values()) == 30 + 3
    assert set(dm.unreadable) == {"blight/corrupt.jpg", "blight/truncated.jpg", "rust/empty.png"}
    assert "skipped 3 unreadable" in caplog.text and "corrupt.jpg" in caplog.text
    assert decode_image(root / "rust" / "sixteen_bit.png", 8).min() == 255
    assert decode_image(root / "healthy" / "rgba.png", 8).shape == (8, 8, 3)
    assert "blight/corrupt.jpg" in dm.summary()["unreadable_files"]

    with pytest.raises(DataError, match="corrupt.jpg"):
        datamodule(ImageFolderDataModule, root, img_size=24, strict=True)


def test_exif_orientation_is_applied_on_load(tmp_path):
    """A phone photo: pixels stored landscape, an EXIF tag saying to turn it a quarter clockwise."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    root = write_image_folder(tmp_path / "images")
    photo = root / "healthy" / "phone.jpg"
    Image.fromarray(stored).save(photo, exif=exif, quality=95)
    assert Image.open(photo).getexif()[0x0112] == 6
    upright = decode_image(photo, 16)  # the red half turned to the top
    assert upright[:6, :, 0].min() > 200 and upright[:6, :, 2].max() < 60
    assert upright[-6:, :, 2].min() > 200 and upright[-6:, :, 0].max() < 60
    dm = datamodule(ImageFolderDataModule, root, img_size=16)
    (split,) = (s for s in dm.splits.values() if "healthy/phone.jpg" in s.sources)
    assert np.array_equal(split.images[split.sources.index("healthy/phone.jpg")].numpy(), upright.transpose(2, 0, 1))


@pytest.mark.parametrize("problem", ["missing", "single_class", "empty_class", "unreadable_class", "single_image"])
def test_image_folder_clear_errors(tmp_path, problem):
    """An empty class folder and one whose files are all unreadable are refused alike, naming the class;
    a class too small to split names itself and the images per class the split needs."""
    root = tmp_path / "images"
    if problem != "missing":
        write_image_folder(root, per_class=10, classes=("a",) if problem == "single_class" else ("a", "b"))
    if problem == "empty_class":
        (root / "c").mkdir()
    if problem == "unreadable_class":
        (root / "c").mkdir()
        for i in range(3):
            (root / "c" / f"{i}.jpg").write_bytes(b"not an image")
    if problem == "single_image":
        (root / "c").mkdir()
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "c" / "only.png")
    match = {
        "missing": "does not exist",
        "single_class": "at least 2",
        "empty_class": r"\['c'\].*no image files",
        "unreadable_class": r"(?s)\['c'\].*no readable image file, only 3 unreadable.*c/0\.jpg",
        "single_image": r"class 'c' \(1 image\): too few images .* at least 10 images per class",
    }
    with pytest.raises(DataError, match=match[problem]) as error:
        datamodule(ImageFolderDataModule, root, img_size=16)
    if problem == "single_image":
        assert "\n" not in str(error.value)


def test_kfold_folds_disjoint_and_cover_everything(tmp_path):
    root = write_image_folder(tmp_path / "images")
    held_out = []
    for fold in range(5):
        dm = datamodule(ImageFolderDataModule, root, img_size=16, num_folds=5, fold=fold)
        train, val, test = (set(dm.splits[s].sources) for s in ("train", "val", "test"))
        assert not (train & val or train & test or val & test)
        assert (len(train), len(val), len(test)) == (24, 3, 3)
        held_out.append(val | test)
    assert set().union(*held_out) == set(train | val | test)
    assert sum(len(h) for h in held_out) == 30


def test_expand_augments_copies_of_training_images_only(tmp_path):
    root = write_image_folder(tmp_path / "images")
    plain = datamodule(ImageFolderDataModule, root, img_size=16)
    dm = datamodule(ImageFolderDataModule, root, img_size=16, expand=4, expand_augment=BatchAugment(hflip=1.0))
    train, n = dm.splits["train"], len(plain.splits["train"])
    assert len(train) == 4 * n and per_class(train) == [4 * c for c in per_class(plain.splits["train"])]
    assert torch.equal(train.images[:n], plain.splits["train"].images)
    assert torch.equal(train.images[n : 2 * n], plain.splits["train"].images.flip(-1))
    assert train.sources[n].endswith("#copy1")
    for split in ("val", "test"):
        assert dm.splits[split].sources == plain.splits[split].sources


def test_expand_before_split_puts_copies_of_one_photo_on_both_sides(tmp_path):
    root = write_image_folder(tmp_path / "images")
    leaking = datamodule(
        ImageFolderDataModule,
        root,
        img_size=16,
        expand=4,
        expand_before_split=True,
        expand_augment=BatchAugment(hflip=1.0),
    )
    sizes = {k: len(v) for k, v in leaking.splits.items()}
    assert sum(sizes.values()) == 4 * 30 and sizes["train"] == 96  # 80 % of the 120 expanded images
    photo = lambda source: source.split("#")[0]  # noqa: E731
    trained = {photo(s) for s in leaking.splits["train"].sources}
    held_out = {photo(s) for split in ("val", "test") for s in leaking.splits[split].sources}
    assert trained & held_out  # the leak S1's order has
    clean = datamodule(ImageFolderDataModule, root, img_size=16, expand=4, expand_augment=BatchAugment(hflip=1.0))
    assert not {photo(s) for s in clean.splits["train"].sources} & set(
        clean.splits["val"].sources + clean.splits["test"].sources
    )
    # each image keeps its pixels through the split: a copy is its photo flipped, wherever the photo went
    images = {s: image for split in leaking.splits.values() for s, image in zip(split.sources, split.images)}
    copies = [s for s in images if s.endswith("#copy1") and photo(s) in images]
    assert copies and all(torch.equal(images[s], images[photo(s)].flip(-1)) for s in copies)


# -- CIFAR-10 and Fruits-360 --------------------------------------------------------------------------
def test_cifar10_pickles(tmp_path):
    root = write_cifar10(tmp_path)
    dm = datamodule(CIFAR10DataModule, root, download=True)  # files present: no network needed
    assert dm.class_names == CIFAR_CLASSES
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 80, "val": 20, "test": 20}
    assert per_class(dm.splits["val"]) == [2] * 10
    assert dm.splits["train"].images.shape[1:] == (3, 32, 32)
    first = pickle.loads((root / "cifar-10-batches-py/test_batch").read_bytes())["data"][0]
    assert torch.equal(dm.splits["test"].images[0].flatten(), torch.from_numpy(first))
    assert datamodule(CIFAR10DataModule, root, seed=1).splits["val"].sources != dm.splits["val"].sources
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        datamodule(CIFAR10DataModule, tmp_path / "nowhere", download=False)


def test_cifar10_validation_as_keras_validation_split_and_as_the_test_set(tmp_path):
    root = write_cifar10(tmp_path)
    last = datamodule(CIFAR10DataModule, root, validation="last")
    assert last.splits["train"].sources == [f"cifar-10-batches-py/train[{i}]" for i in range(80)]
    assert last.splits["val"].sources == [f"cifar-10-batches-py/train[{i}]" for i in range(80, 100)]
    on_test = datamodule(CIFAR10DataModule, root, validation="test")
    assert len(on_test.splits["train"]) == 100
    assert on_test.splits["val"].sources == on_test.splits["test"].sources and len(on_test.splits["val"]) == 20
    assert torch.equal(on_test.splits["val"].images, on_test.splits["test"].images)


def test_fruits360_folders(tmp_path):
    root = write_fruits360(tmp_path / "fruits-360")
    dm = datamodule(Fruits360DataModule, root, img_size=32)
    assert dm.class_names == ["Apple Braeburn", "Banana", "Cherry 1"]
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 24, "val": 6, "test": 12}
    assert per_class(dm.splits["test"]) == [4, 4, 4] and dm.splits["test"].sources[0].startswith("Test/")
    assert dm.splits["train"].images.shape[1:] == (3, 32, 32)
    with pytest.raises(DataError, match="not downloaded automatically.*kaggle"):
        datamodule(Fruits360DataModule, tmp_path / "elsewhere")
