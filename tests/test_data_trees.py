"""Image folders with their own test (and validation) trees, and image sizes: the native size by default,
a warning when a resize grows images more than 2x."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import read_results, run_dirs
from fakedata import write_fruits360
from PIL import Image

from cnnlab.data.errors import DataError
from cnnlab.data.imagefolder import ImageFolderDataModule


def write_small_gray_folder(root, size: int = 28, per_class: int = 10):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def setup(dm: ImageFolderDataModule) -> ImageFolderDataModule:
    dm.prepare_data()
    dm.setup()
    return dm


def test_cli_training_test_and_val_trees(cnnlab):
    data = write_fruits360(cnnlab.cwd / "fruits", train=10, test=4)
    shutil.copytree(data / "Test", data / "Val")
    cnnlab(
        "data=imagefolder",
        f"data.root={data / 'Training'}",
        f"data.test_root={data / 'Test'}",
        f"data.val_root={data / 'Val'}",
        "debug=fast",
        "data.batch_size=8",
    )
    (run,) = run_dirs(cnnlab.cwd)
    results = read_results(run)
    assert results["split_sizes"] == {"train": 30, "val": 12, "test": 12}
    test_files = (run / "data/test_files.txt").read_text().splitlines()
    assert len(test_files) == 12 and all(f.startswith("Test/") for f in test_files)
    assert all(f.startswith("Val/") for f in (run / "data/val_files.txt").read_text().splitlines())
    hparams = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["preprocessing"]["img_size"] == 100  # Fruits-360's own 100x100, not upscaled to 128


def test_test_tree_alone_takes_validation_from_training_and_serves_files(tmp_path):
    data = write_fruits360(tmp_path / "fruits", train=9, test=4)
    kwargs = dict(root=data / "Training", test_root=str(data / "Test"), img_size=32, seed=0)
    dm = setup(ImageFolderDataModule(**kwargs))
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 24, "val": 3, "test": 12}
    assert not set(dm.splits["val"].sources) & set(dm.splits["train"].sources)
    lazy = setup(ImageFolderDataModule(**kwargs, in_memory=False))  # per-image reading finds the test tree too
    images, _ = next(iter(lazy.test_dataloader()))
    assert torch.equal(images, dm.splits["test"].images)


def test_val_tree_needs_a_test_tree(tmp_path):
    with pytest.raises(DataError, match="data.val_root needs data.test_root"):
        ImageFolderDataModule(root=tmp_path, val_root=str(tmp_path))


def test_native_size_by_default_and_a_warning_when_upscaling(tmp_path, caplog):
    root = write_small_gray_folder(tmp_path / "small")
    assert setup(ImageFolderDataModule(root=root, img_size=None, fractions=(0.6, 0.2, 0.2))).img_size == 28
    with caplog.at_level(logging.WARNING):
        dm = setup(ImageFolderDataModule(root=root, img_size=96, fractions=(0.6, 0.2, 0.2)))
    assert dm.splits["train"].images.shape[-1] == 96
    assert "data.img_size=96 upscales the 28x28 images" in caplog.text


def test_gray_folder_stays_single_channel_unless_the_model_takes_rgb(tmp_path, caplog):
    root = write_small_gray_folder(tmp_path / "gray")
    options = dict(root=root, img_size=None, fractions=(0.6, 0.2, 0.2), seed=0)
    gray = setup(ImageFolderDataModule(**options))
    assert gray.in_chans == 1 and gray.splits["train"].images.shape[1:] == (1, 28, 28)
    lazy = setup(ImageFolderDataModule(**options, in_memory=False))
    images, _ = next(iter(lazy.test_dataloader()))
    assert torch.equal(images, gray.splits["test"].images)  # per-image reading gives the same gray batches
    rgb = ImageFolderDataModule(**options)
    rgb.rgb = True  # what cnnlab.train sets for a pretrained backbone
    with caplog.at_level(logging.INFO):
        setup(rgb)
    assert "single-channel: served as 3 equal channels, as the pretrained backbone takes RGB" in caplog.text
    assert rgb.in_chans == 3 and torch.equal(rgb.splits["test"].images[:, 2:], gray.splits["test"].images)


def test_cli_trains_a_gray_folder_with_one_input_channel(cnnlab):
    root = write_small_gray_folder(cnnlab.cwd / "gray", per_class=20)
    cnnlab("data=imagefolder", f"data.root={root}", "model=cnn_baseline_s2", "debug=fast", "data.batch_size=8")
    (run,) = run_dirs(cnnlab.cwd)
    checkpoint = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    preprocessing = checkpoint["hyper_parameters"]["preprocessing"]
    assert preprocessing["in_chans"] == 1 and preprocessing["img_size"] == 28
    first_conv = next(weight for weight in checkpoint["state_dict"].values() if weight.ndim == 4)
    assert first_conv.shape[1] == 1  # the network's first layer takes one channel
