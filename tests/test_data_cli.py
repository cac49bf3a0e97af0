"""A short real ``cnnlab`` run on each dataset, written in its real on-disk format."""

from __future__ import annotations

import json

import pytest
from conftest import read_results, run_dirs
from fakedata import write_cifar10, write_eurosat, write_fruits360, write_image_folder

COMMON = [
    "debug=fast",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.batch_size=8",
    "data.eval_batch_size=16",
]


@pytest.mark.parametrize("dataset", ["eurosat", "cifar10", "fruits360", "imagefolder"])
def test_cli_trains_on_each_dataset(cnnlab, dataset):
    root = cnnlab.cwd / "data"
    writer, overrides, sizes = {
        "eurosat": (write_eurosat, ["data.img_size=32"], {"train": 60, "val": 20, "test": 20}),
        "cifar10": (write_cifar10, [], {"train": 80, "val": 20, "test": 20}),
        "fruits360": (write_fruits360, [], {"train": 24, "val": 6, "test": 12}),
        "imagefolder": (
            write_image_folder,
            ["data.img_size=32", "data.num_folds=5", "data.fold=2", "data.expand=2"],
            {"train": 48, "val": 3, "test": 3},
        ),
    }[dataset]
    writer(root)
    cnnlab(f"data={dataset}", f"data.root={root}", *COMMON, *overrides)
    (run,) = run_dirs(cnnlab.cwd)
    results = read_results(run)
    assert results["status"] == "completed" and results["split_sizes"] == sizes
    summary = json.loads((run / "data/summary.json").read_text())
    assert sum(summary["per_class"]["test"].values()) == sizes["test"]
    assert len((run / "data/train_files.txt").read_text().split("\n")) == sizes["train"] + 1


def test_cli_offline_download_fails_fast_with_one_message(cnnlab):
    # a proxy on a closed port stands in for "no network" whatever the machine's real connectivity
    result = cnnlab(
        "data=eurosat",
        f"data.root={cnnlab.cwd / 'data'}",
        "debug=fast",
        check=False,
        https_proxy="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="",
        NO_PROXY="",
    )
    assert result.returncode != 0
    assert "EuroSAT could not be downloaded from https://huggingface.co/" in result.stderr
    assert "eurosat/2750/<Class>/<Class>_<n>.jpg" in result.stderr


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_cli_lists_unreadable_files_and_reports_on_what_the_test_saw(cnnlab, in_memory):
    """data.in_memory=false finds the unreadable files up front too: the same splits and summary; either way
    the run's report holds the logits of its own test (no second pass), file by file."""
    root = write_image_folder(cnnlab.cwd / "images")
    cnnlab("data=imagefolder", f"data.root={root}", f"data.in_memory={in_memory}", "data.num_workers=1", *COMMON)
    (run,) = run_dirs(cnnlab.cwd)
    summary = json.loads((run / "data/summary.json").read_text())
    assert list(summary["unreadable_files"]) == ["blight/corrupt.jpg"]
    assert sum(summary["split_sizes"].values()) == 30
    assert "blight/corrupt.jpg" not in (run / "data/train_files.txt").read_text()
    results = read_results(run)
    assert results["status"] == "completed" and 0.0 <= results["test/auroc_macro"] <= 1.0
    rows = (run / "report/predictions.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == (run / "data/test_files.txt").read_text().split()
    report = json.loads((run / "report/classification_report.json").read_text())
    assert report["accuracy"] == pytest.approx(results["test/acc"], abs=1e-6)


def test_cli_class_too_small_to_split_is_one_line(cnnlab):
    root = write_image_folder(cnnlab.cwd / "images")
    (root / "tiny").mkdir()
    (root / "tiny" / "only.jpg").write_bytes((root / "rust" / "1.jpg").read_bytes())
    result = cnnlab("data=imagefolder", f"data.root={root}", *COMMON, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("cnnlab: error:")]
    assert "class 'tiny' (1 image)" in error and "at least 10 images per class" in error


def test_debug_fast_evaluates_every_class_of_a_class_sorted_folder(cnnlab):
    """debug=fast's two evaluation batches come from class-interleaved val/test splits, not from the first
    class of a class-sorted folder (which scored accuracy 0 and AUROC nan)."""
    root = write_image_folder(cnnlab.cwd / "images", per_class=60)
    cnnlab("data=imagefolder", f"data.root={root}", "data.img_size=16", "debug=fast", "data.eval_batch_size=3")
    (run,) = run_dirs(cnnlab.cwd)
    rows = [row.split(",") for row in (run / "report/predictions.csv").read_text().splitlines()[1:]]
    assert len(rows) == 6 and {row[0].split("/")[0] for row in rows} == {"blight", "healthy", "rust"}
    assert read_results(run)["test/auroc_macro"] >= 0.0  # a number: every class was present
