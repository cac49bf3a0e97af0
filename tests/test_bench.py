"""The training benchmark (benchmarks/bench.py, run from a checkout) on tiny settings: every mode runs, the
JSON holds every figure, the generated folder is in EuroSAT's layout. No timed assertions: the figures
themselves are the benchmark's output."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.data.eurosat import EuroSATDataModule
from cnnlab.training.allocator import huge_pages_requested, preloaded_allocator
from cnnlab.training.precision import cpu_supports_bf16

BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
sys.path.insert(0, str(BENCH_SCRIPT.parent))  # the benchmark is a script beside the package, not part of it
from bench import DEFAULT_MODES, EUROSAT_CLASSES, conventional_transform, main, make_eurosat_folder  # noqa: E402

TINY = [
    "--img-size",
    "32",
    "--images",
    "60",
    "--batch-size",
    "8",
    "--epochs",
    "2",
    "--windows",
    "2",
    "--window-steps",
    "1",
    "--warmup",
    "1",
    "--workers",
    "1",
]


def bench_args(tmp_path: Path, *args: str, settings: list[str] = TINY) -> list[str]:
    return [*settings, "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "bench.json"), *args]


def run_bench(tmp_path: Path, *args: str, settings: list[str] = TINY) -> dict:
    """The benchmark's ``main`` in this process (for tests that patch what it calls)."""
    main(bench_args(tmp_path, *args, settings=settings))
    return json.loads((tmp_path / "bench.json").read_text())


def run_bench_script(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """``python benchmarks/bench.py ...`` from another folder, as a user runs it: its JSON and stdout."""
    run = subprocess.run(
        [sys.executable, str(BENCH_SCRIPT), *bench_args(tmp_path, *args)], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((tmp_path / "bench.json").read_text()), run.stdout


def test_every_mode_runs_and_the_json_has_the_fields(tmp_path):
    results, table = run_bench_script(tmp_path, "--model", "cnn_baseline_s4 model.net.dropout=0.1", "--rounds", "2")
    assert {"cpu", "cores", "bf16_supported", "load_average_start", "load_average_end"} <= results["machine"].keys()
    (run,) = results["runs"]
    assert run["model"] == "cnn_baseline_s4 model.net.dropout=0.1" and run["channels_last"]
    # tune_malloc is on by default: glibc's malloc unless the environment preloads another
    assert run["malloc_tuned"] is (platform.libc_ver()[0] == "glibc" and preloaded_allocator() is None)
    # the environment's opt-ins, as this process started with them (none in a plain test run)
    assert run["huge_pages"] is huge_pages_requested() and run["preloaded_allocator"] == preloaded_allocator()
    assert run["precision"] == ("bf16-mixed" if cpu_supports_bf16() else "32-true")  # what trainer.precision=auto picks
    assert run["train_images"] == 36 and run["augment"]["degrees"] == 45.0
    assert run["floor_window_steps"] == 1  # --window-steps
    assert set(run["modes"]) == set(DEFAULT_MODES) == {"floor", "cnnlab", "conventional"}
    for mode, entry in run["modes"].items():
        # 2 rounds: 2 floor windows each, 1 epoch after warm-up each
        assert len(entry["samples"]) == (4 if mode == "floor" else 2), mode
        assert entry["img_per_s"] > 0 and entry["peak_mem_mb"] > 0
    assert run["modes"]["cnnlab"]["eval_img_per_s"] > 0
    assert run["cnnlab_vs_floor"] > 0 and run["cnnlab_vs_conventional"] > 0 and run["cnnlab_vs_feed"] is None
    assert table.count("| cnn_baseline_s4 model.net.dropout=0.1 |") == 3 and "/ conventional" in table


def test_startup_and_mode_subset(tmp_path):
    at = TINY.index("--window-steps")
    default_windows = TINY[:at] + TINY[at + 2 :]  # a floor window is as many steps as an epoch
    results = run_bench(
        tmp_path, "--model", "cnn_baseline_s4", "--modes", "floor", "--startup", "1", settings=default_windows
    )
    (run,) = results["runs"]
    assert list(run["modes"]) == ["floor"] and run["cnnlab_vs_floor"] is None
    assert run["floor_window_steps"] == 5  # 36 training images in batches of 8
    assert results["startup"]["sec_to_first_step"] > 0 and len(results["startup"]["samples"]) == 1


def test_feed_mode_trains_on_the_datamodules_batches(tmp_path, monkeypatch):
    """feed: the floor's loop over full epochs of cnnlab's own (augmented) batches, without a Trainer."""
    import lightning.pytorch as pl

    from cnnlab.data.base import ImageDataModule

    served = []
    model_inputs = ImageDataModule.model_inputs
    monkeypatch.setattr(
        ImageDataModule,
        "model_inputs",
        lambda self, batch, augment: served.append(augment) or model_inputs(self, batch, augment),
    )
    monkeypatch.setattr(pl.Trainer, "fit", lambda *args, **kwargs: pytest.fail("feed must not run a Trainer"))
    results = run_bench(tmp_path, "--model", "cnn_baseline_s4", "--modes", "floor,feed")
    (run,) = results["runs"]
    assert len(run["modes"]["feed"]["samples"]) == 1  # 2 epochs, the first one warm-up
    assert served == [True] * 10  # 36 training images in batches of 8, both epochs, augmented
    assert run["feed_vs_floor"] > 0 and run["cnnlab_vs_feed"] is None


def test_a_failing_model_keeps_the_others_figures(tmp_path, capsys):
    results = run_bench(
        tmp_path, "--model", "cnn_baseline_s4 model.no_such_key=1", "--model", "cnn_baseline_s4", "--modes", "floor"
    )
    failed, measured = results["runs"]
    assert "no_such_key" in failed["error"] and measured["modes"]["floor"]["img_per_s"] > 0
    assert "cnn_baseline_s4 model.no_such_key=1: failed" in capsys.readouterr().out


def test_generated_folder_is_readable_as_eurosat(tmp_path):
    root = make_eurosat_folder(tmp_path, 50, 32)
    assert make_eurosat_folder(tmp_path, 50, 32) == root  # made once
    dm = EuroSATDataModule(root=root, img_size=32, download=False)
    dm.setup()
    assert dm.class_names == sorted(EUROSAT_CLASSES)
    assert sum(len(s) for s in dm.splits.values()) == 50
    assert dm.splits["train"].images.shape[1:] == (3, 32, 32)


def test_conventional_transform_mirrors_the_preset():
    from torchvision import transforms as T

    ops = conventional_transform(
        {"hflip": 0.5, "vflip": 0.0, "degrees": 15.0, "translate": 0.1, "zoom": 0.1}
    ).transforms
    assert [type(op) for op in ops] == [T.RandomHorizontalFlip, T.RandomAffine, T.ToTensor]
    assert ops[1].degrees == [-15.0, 15.0] and ops[1].translate == (0.1, 0.1) and ops[1].scale == (0.9, 1.1)


def test_unknown_mode_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        main(["--modes", "floor,fastest", "--data-dir", str(tmp_path)])


def test_on_an_accelerator_the_cache_moves_to_the_device_once(tmp_path):
    """The GPU path, checked on the meta device (no GPU here): batches come out of the device copy."""
    from types import SimpleNamespace

    import torch

    dm = EuroSATDataModule(root=make_eurosat_folder(tmp_path, 50, 32), img_size=32, batch_size=4, download=False)
    dm.setup()
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")), current_epoch=0)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.device.type == labels.device.type == "meta" and images.shape == (4, 3, 32, 32)
    assert dm.dataset("train").split is dm.dataset("train").split  # moved once, then reused
    assert dm.splits["train"].images.device.type == "cpu"
