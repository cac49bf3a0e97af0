"""``data=torchvision``: torchvision's datasets by name on their official splits, on tiny datasets written in
each family's real on-disk format (IDX, the CIFAR-100 pickles, SVHN's .mat files, GTSRB's ppm tree)."""

from __future__ import annotations

import csv
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_results, run_cli, run_dirs
from fakedata import (
    write_cifar100,
    write_dtd,
    write_flowers102,
    write_food101,
    write_gtsrb,
    write_idx_dataset,
    write_oxford_pets,
    write_stl10,
    write_svhn,
)
from PIL import Image

from cnnlab.data.errors import DataError
from cnnlab.data.torchvision_dataset import DATASETS, TorchvisionDataModule


def datamodule(root: Path, name: str, **kwargs) -> TorchvisionDataModule:
    dm = TorchvisionDataModule(name=name, root=root, seed=0, download=kwargs.pop("download", False), **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_every_listed_dataset_says_how_it_splits():
    assert {"MNIST", "FashionMNIST", "KMNIST", "EMNIST", "SVHN", "STL10", "CIFAR100", "Flowers102", "Food101"} <= set(
        DATASETS
    )
    assert {"OxfordIIITPet", "DTD", "GTSRB"} <= set(DATASETS)
    for name, spec in DATASETS.items():
        assert {"train", "test"} <= set(spec.splits) <= {"train", "val", "test"}, name
        assert spec.size >= 28, name


def test_debian_flat_idx_files_are_read_without_writing_there(tmp_path, cache_dir):
    """Debian's dataset-fashion-mnist layout: the four .gz IDX files directly in the folder."""
    root = write_idx_dataset(tmp_path / "fashion-mnist", train=100, test=40)
    before = listing(root)
    dm = datamodule(root, "FashionMNIST")
    assert listing(root) == before  # the decompressed view lives in the cache directory
    assert list(cache_dir.glob("torchvision/FashionMNIST-*/FashionMNIST/raw/train-images-idx3-ubyte"))
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 90, "val": 10, "test": 40}  # official test split
    assert dm.in_chans == 1 and dm.img_size == 28 and dm.splits["test"].images.shape == (40, 1, 28, 28)
    assert dm.class_names[0] == "T-shirt/top" and len(dm.class_names) == 10
    assert np.bincount(dm.splits["val"].labels.numpy()).tolist() == [1] * 10  # stratified
    assert dm.splits["test"].labels.tolist() == [i % 10 for i in range(40)]  # file order kept


def test_torchvision_layout_uncompressed_and_pretrained_rgb(tmp_path):
    """<root>/MNIST/raw/ with the decompressed files, as torchvision's own download leaves it."""
    flat = write_idx_dataset(tmp_path / "flat", train=100, test=20)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in flat.glob("*.gz"):
        (raw / packed.stem).write_bytes(__import__("gzip").decompress(packed.read_bytes()))
    dm = TorchvisionDataModule(name="mnist", root=tmp_path / "data", download=False, img_size=32)
    dm.rgb = True  # what cnnlab.train sets for a pretrained backbone
    dm.prepare_data()
    dm.setup()
    assert dm.data_root() == tmp_path / "data"
    assert dm.in_chans == 3 and dm.splits["train"].images.shape[1:] == (3, 32, 32)
    image = dm.splits["train"].images[0]
    assert torch.equal(image[0], image[2])


def test_emnist_needs_its_split_and_is_transposed_back(tmp_path):
    root = write_idx_dataset(tmp_path / "emnist", train=50, test=10, classes=5, prefix="emnist-digits-")
    with pytest.raises(DataError, match="EMNIST needs data.variant=.*balanced"):
        TorchvisionDataModule(name="EMNIST", root=root)
    dm = datamodule(root, "EMNIST", variant="digits", val_fraction=0.2)
    assert len(dm.splits["test"]) == 10 and dm.class_names == [str(d) for d in range(10)]
    # the fake digit c lights a square at row c // 4, column c % 4: transposed, at row c % 4, column c // 4
    label = int(dm.splits["test"].labels[1])
    assert dm.splits["test"].images[1, 0, 7 * (label % 4) + 3, 7 * (label // 4) + 3] == 255


@pytest.mark.parametrize(
    ("name", "writer", "sizes", "classes"),
    [
        ("CIFAR100", write_cifar100, {"train": 36, "val": 4, "test": 20}, 100),
        ("SVHN", lambda root: write_svhn(root, train=100, test=20), {"train": 90, "val": 10, "test": 20}, 10),
    ],
)
def test_array_datasets_on_their_official_split(tmp_path, name, writer, sizes, classes):
    dm = datamodule(writer(tmp_path / "data"), name)
    assert {k: len(v) for k, v in dm.splits.items()} == sizes and len(dm.class_names) == classes
    assert dm.in_chans == 3 and dm.img_size == 32 and dm.splits["train"].images.dtype == torch.uint8
    # the fake images hold a bright square where the class says: labels and pixels stayed paired
    for image, label in zip(dm.splits["test"].images, dm.splits["test"].labels.tolist()):
        row, col = divmod(label % 16, 4)
        assert image[:, 8 * row + 4, 8 * col + 4].tolist() == [255, 255, 255]


def test_image_file_dataset_is_cached_at_its_default_size(tmp_path, cache_dir):
    root = write_gtsrb(tmp_path / "data", train=10, test=4)
    dm = datamodule(root, "GTSRB")
    assert dm.img_size == 32 and {k: len(v) for k, v in dm.splits.items()} == {"train": 27, "val": 3, "test": 12}
    assert dm.splits["test"].sources[0] == "gtsrb/GTSRB/Final_Test/Images/00000.ppm"
    assert dm.splits["test"].labels.tolist()[:4] == [0, 1, 2, 0]  # from GT-final_test.csv
    assert len(list(cache_dir.glob("images-v*/GTSRB_train-*-32px-*.npy"))) == 1
    assert len(list(cache_dir.glob("images-v*/GTSRB_test-*-32px-*.npy"))) == 1


def test_a_dataset_with_its_own_validation_split_keeps_it(tmp_path):
    dm = datamodule(write_dtd(tmp_path / "data", per_split=2), "DTD", img_size=48)
    assert dm.variant == 1 and dm.class_names == ["banded", "dotted", "striped"]
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 6, "val": 6, "test": 6}
    assert all(source.startswith("dtd/dtd/images/") for source in dm.splits["val"].sources)
    assert dm.splits["val"].images.shape == (6, 3, 48, 48)
    with pytest.raises(DataError, match="one of 1, 2"):
        TorchvisionDataModule(name="DTD", variant=11)


def test_missing_unknown_and_offline_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"FashionMNIST is not in .*set data.download=true") as missing:
        datamodule(tmp_path, "FashionMNIST")
    assert "\n" not in str(missing.value) and "t10k-images-idx3-ubyte" in str(missing.value)
    with pytest.raises(DataError, match="data.name=ImageNet21k is not .* one of MNIST"):
        TorchvisionDataModule(name="ImageNet21k")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DataError, match="SVHN could not be downloaded from http") as offline:
        datamodule(tmp_path, "SVHN", download=True)
    assert "\n" not in str(offline.value)


def train_fashion_mnist(cnnlab, root: Path, epochs: int) -> tuple[Path, dict]:
    """`cnnlab data=torchvision data.name=FashionMNIST` on `root` with the S2 baseline CNN: run dir, results."""
    cnnlab(
        "data=torchvision",
        "data.name=FashionMNIST",
        f"data.root={root}",
        "model=cnn_baseline_s2",
        f"trainer.max_epochs={epochs}",
        "callbacks.progress_bar=null",
    )
    (run,) = run_dirs(cnnlab.cwd)
    return run, read_results(run)


def test_cli_trains_grayscale_fashion_mnist_on_its_official_split(cnnlab):
    root = write_idx_dataset(cnnlab.cwd / "fashion-mnist", train=300, test=100)
    run, results = train_fashion_mnist(cnnlab, root, epochs=5)
    assert results["status"] == "completed"
    assert results["split_sizes"] == {"train": 270, "val": 30, "test": 100}
    assert results["test/acc"] >= 0.9  # the fake classes are a bright square's place: learnable in a few epochs
    hparams = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["preprocessing"]["in_chans"] == 1 and hparams["preprocessing"]["img_size"] == 28
    summary = json.loads((run / "data/summary.json").read_text())
    assert summary["per_class"]["test"]["Ankle boot"] == 10
    assert "- model: `cnnlab.models.cifar_cnns.CNNBaselineS2(" in (run / "report/report.md").read_text()

    # cnnlab-predict reads image files as gray for this single-channel model: the same predictions as the test
    dm = datamodule(root, "FashionMNIST")
    images = cnnlab.cwd / "pngs"
    images.mkdir()
    for i, image in enumerate(dm.splits["test"].images[:20]):
        Image.fromarray(image[0].numpy()).convert("RGB").save(images / f"{i:02d}.png")
    checkpoint = run / "checkpoints/best.ckpt"
    run_cli([f"ckpt_path={checkpoint}", f"inputs={images}", "output_dir=pred"], cnnlab.cwd, module="cnnlab.predict")
    predicted = [row["prediction"] for row in csv.DictReader(open(cnnlab.cwd / "pred/predictions.csv"))]
    tested = {row["source"]: row["predicted"] for row in csv.DictReader(open(run / "report/predictions.csv"))}
    assert predicted == [tested[source] for source in dm.splits["test"].sources[:20]]


@pytest.mark.parametrize("name", ["CIFAR100", "SVHN"])
def test_cli_runs_on_other_families(cnnlab, name):
    root = {"CIFAR100": write_cifar100, "SVHN": lambda r: write_svhn(r, train=100)}[name](cnnlab.cwd / "data")
    cnnlab("data=torchvision", f"data.name={name}", f"data.root={root}", "debug=fast", "data.batch_size=8")
    (run,) = run_dirs(cnnlab.cwd)
    assert read_results(run)["status"] == "completed"


def test_cli_offline_is_one_line_without_traceback(cnnlab):
    proxy = "http://127.0.0.1:9"  # a closed port stands in for "no network" whatever the machine has
    result = cnnlab(
        "data=torchvision",
        "data.name=KMNIST",
        f"data.root={cnnlab.cwd / 'data'}",
        "debug=fast",
        check=False,
        http_proxy=proxy,
        https_proxy=proxy,
        HTTP_PROXY=proxy,
        HTTPS_PROXY=proxy,
        no_proxy="",
        NO_PROXY="",
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cnnlab: error:")]
    assert "KMNIST could not be downloaded" in line and "data.root" in line


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist_reaches_a_two_layer_cnn_accuracy(cnnlab):
    """The real Fashion-MNIST as Debian installs it, on its official 60,000/10,000 split: the S2 baseline CNN
    (2 conv layers) reaches the >= 0.85 test accuracy published 2-layer CNNs pass, in 2 epochs."""
    _, results = train_fashion_mnist(cnnlab, DEBIAN_FASHION_MNIST, epochs=2)
    assert results["split_sizes"] == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert results["test/acc"] >= 0.85


@pytest.mark.parametrize(("model", "in_chans"), [("cnn_baseline_s2", 1), ("timm", 3)])
def test_gray_data_is_rgb_only_for_a_pretrained_backbone(tmp_path, caplog, model, in_chans):
    from hydra import compose, initialize_config_module

    from cnnlab.train import build_datamodule

    root = write_idx_dataset(tmp_path / "fashion-mnist", train=100, test=20)
    overrides = ["data=torchvision", f"data.root={root}", f"model={model}", "paths.output_dir=/tmp/cnnlab-compose"]
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides + (["model.net.pretrained=true"] if model == "timm" else []))
    dm = build_datamodule(cfg)
    with caplog.at_level(logging.INFO):
        dm.prepare_data()
        dm.setup()
    assert dm.in_chans == in_chans and dm.splits["train"].images.shape[1] == in_chans
    assert ("repeated to 3 channels, as the pretrained backbone takes RGB" in caplog.text) == (in_chans == 3)


def assert_paired(split, size: int) -> None:
    """The fake images hold a bright square where the class says (fakedata.class_pattern_images): it is still
    there in every image of ``split`` at ``size`` px, so labels and pixels stayed paired."""
    cell = size // 4
    for image, label in zip(split.images, split.labels.tolist()):
        row, col = divmod(label % 16, 4)
        assert image[:, cell * row + cell // 2, cell * col + cell // 2].min() > 200, (label, split.sources[:1])


@pytest.mark.parametrize("unlabeled", [3, 0])  # 0: unlabeled_X.bin deleted, as users do with its 2.6 GB
def test_stl10_binaries_on_their_official_split(tmp_path, unlabeled):
    dm = datamodule(write_stl10(tmp_path / "data", train=100, test=20, unlabeled=unlabeled), "STL10")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 90, "val": 10, "test": 20}  # no unlabeled images
    assert dm.img_size == 96 and dm.in_chans == 3 and dm.splits["test"].images.shape == (20, 3, 96, 96)
    assert dm.class_names[:2] == ["airplane", "bird"] and len(dm.class_names) == 10
    assert dm.splits["test"].labels.tolist() == [i % 10 for i in range(20)]  # the 1-based file labels, from 0
    assert_paired(dm.splits["test"], 96)  # the column-major pixels read upright: a transposed square would miss
    assert_paired(dm.splits["train"], 96)


@pytest.mark.parametrize(
    ("name", "writer", "sizes", "classes"),
    [
        ("Flowers102", write_flowers102, {"train": 8, "val": 8, "test": 12}, ["pink primrose"]),
        ("Food101", write_food101, {"train": 9, "val": 3, "test": 6}, ["apple_pie", "ramen", "tacos"]),
        (
            "OxfordIIITPet",
            write_oxford_pets,
            {"train": 9, "val": 3, "test": 9},
            ["Abyssinian", "American Bulldog", "Bengal"],
        ),
    ],
)
def test_image_file_datasets_on_their_official_split(tmp_path, cache_dir, name, writer, sizes, classes):
    dm = datamodule(writer(tmp_path / "data"), name, img_size=32, val_fraction=0.25)
    assert {k: len(v) for k, v in dm.splits.items()} == sizes
    assert dm.class_names[: len(classes)] == classes
    assert dm.in_chans == 3 and dm.splits["train"].images.shape[1:] == (3, 32, 32)
    for split in dm.splits.values():
        assert_paired(split, 32)
    assert len(list(cache_dir.glob(f"images-v*/{name}_test-*-32px-*.npy"))) == 1


def test_flowers102_splits_are_the_ids_of_setid_mat(tmp_path):
    from scipy.io import loadmat

    root = write_flowers102(tmp_path / "data")
    setid = loadmat(root / "flowers-102/setid.mat", squeeze_me=True)
    dm = datamodule(root, "Flowers102", img_size=32)
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        # as a set: evaluation splits are reordered class by class in turn (debug=fast's balanced batches)
        assert sorted(dm.splits[split].sources) == [f"flowers-102/jpg/image_{i:05d}.jpg" for i in setid[key]]
    assert len(dm.class_names) == 102


def test_cli_trains_on_oxford_pets(cnnlab_logged_out):
    root = write_oxford_pets(cnnlab_logged_out.cwd / "data")
    cnnlab_logged_out(
        "data=torchvision", "data.name=OxfordIIITPet", f"data.root={root}", "data.val_fraction=0.25", "debug=smoke"
    )
    (run,) = run_dirs(cnnlab_logged_out.cwd)
    results = read_results(run)
    assert results["status"] == "completed"
    assert results["split_sizes"] == {"train": 9, "val": 3, "test": 9}
    assert 0.0 <= results["test/acc"] <= 1.0
    summary = json.loads((run / "data/summary.json").read_text())
    assert summary["per_class"]["test"] == {"Abyssinian": 3, "American Bulldog": 3, "Bengal": 3}
