"""The decoded-image cache: outside the user's data, never stale, memory-mapped and shared by processes,
written once by concurrent runs, and a full disk or a read-only dataset is no failure."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_dirs
from fakedata import write_eurosat, write_image_folder
from PIL import Image
from torchvision.datasets import ImageFolder

from cnnlab.data import cache
from cnnlab.data.imagefolder import ImageFolderDataModule
from cnnlab.data.images import decode_image

TESTS = Path(__file__).parent
SMOKE = ["debug=smoke", "data.img_size=32", "test=false"]


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``folder`` with its size and modification time (a folder's changes
    when an entry is added or removed, even if it is removed again)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def cached_arrays(cache_root: Path, size: int) -> list[Path]:
    return sorted(cache_root.glob(f"images-v*/*-{size}px-*.npy"))


def datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(root=root, seed=0, **{"img_size": 24, **kwargs})
    dm.prepare_data()
    dm.setup()
    return dm


def run_log(run: Path) -> str:
    return "".join(p.read_text() for p in run.glob("*.log"))


def chw(path: Path, size: int) -> np.ndarray:
    return decode_image(path, size).transpose(2, 0, 1)


def has_row(array: np.ndarray, row: np.ndarray) -> bool:
    return bool((array == row).all(axis=(1, 2, 3)).any())


# -- outside the data ----------------------------------------------------------------------------------
def test_cli_runs_leave_the_data_folder_as_it_was(cnnlab, cache_dir):
    root = write_image_folder(cnnlab.cwd / "images")
    before = tree(root)
    for _ in range(2):  # the first run decodes into the cache, the second memory-maps it
        cnnlab("data=imagefolder", f"data.root={root}", *SMOKE)
    assert tree(root) == before
    dataset = ImageFolder(str(root), is_valid_file=lambda p: not p.endswith("corrupt.jpg"))
    assert dataset.classes == ["blight", "healthy", "rust"] and len(dataset) == 30
    first, second = run_dirs(cnnlab.cwd)
    assert "decoding 31 images" in run_log(first) and "memory-mapped 31 decoded images" in run_log(second)
    (array,) = cached_arrays(cache_dir, 32)
    pixels = np.load(array, mmap_mode="r")
    assert pixels.shape == (31, 3, 32, 32) and has_row(pixels, chw(root / "healthy" / "3.jpg", 32))
    assert not list(cache_dir.rglob("*.tmp"))


def test_default_location_is_xdg_cache_home_else_home(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "images")
    monkeypatch.delenv("CNNLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    datamodule(root)
    assert len(cached_arrays(tmp_path / "xdg" / "cnnlab", 24)) == 1
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    datamodule(root)
    assert len(cached_arrays(tmp_path / "home" / ".cache" / "cnnlab", 24)) == 1


# -- never stale ---------------------------------------------------------------------------------------
def write_bmp_folder(root: Path, per_class: int = 10) -> Path:
    """Uncompressed BMPs: a file's byte size depends on its dimensions alone."""
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / name / f"{i}.bmp")
    return root


def replace_same_size(path: Path, keep_mtime: bool = False) -> None:
    stat = path.stat()
    Image.fromarray(np.full((20, 20, 3), (250, 10, 10), np.uint8)).save(path)
    assert path.stat().st_size == stat.st_size
    if keep_mtime:  # as cp -p, rsync -a or an archive's extraction do
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_cli_picks_up_a_file_replaced_by_one_of_the_same_size(cnnlab, cache_dir):
    root = write_bmp_folder(cnnlab.cwd / "images")
    replaced = root / "b" / "3.bmp"
    old = chw(replaced, 32)
    cnnlab("data=imagefolder", f"data.root={root}", *SMOKE)
    (first,) = cached_arrays(cache_dir, 32)
    replace_same_size(replaced)
    cnnlab("data=imagefolder", f"data.root={root}", *SMOKE)
    (second,) = cached_arrays(cache_dir, 32)  # the superseded cache is gone
    assert second != first
    pixels = np.load(second)
    assert has_row(pixels, chw(replaced, 32)) and not has_row(pixels, old)


def test_cache_verify_picks_up_a_replacement_that_kept_size_and_time(tmp_path):
    root = write_bmp_folder(tmp_path / "images")
    replaced = root / "c" / "5.bmp"
    datamodule(root, cache_verify=True)
    replace_same_size(replaced, keep_mtime=True)
    dm = datamodule(root, cache_verify=True)
    (split,) = (s for s in dm.splits.values() if "c/5.bmp" in s.sources)
    assert np.array_equal(split.images[split.sources.index("c/5.bmp")].numpy(), chw(replaced, 24))


# -- memory-mapped, shared, lifecycle ------------------------------------------------------------------
def mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def test_setup_has_no_side_effects_and_prepare_data_builds_what_setup_maps(tmp_path, cache_dir):
    root = write_image_folder(tmp_path / "images")
    plain = ImageFolderDataModule(root=root, img_size=24, seed=0)
    with pytest.raises(RuntimeError, match="after setup"):
        plain.num_classes
    plain.setup()  # decodes into memory, writes nothing
    assert plain.num_classes == 3 and not list(cache_dir.rglob("*"))
    dm = datamodule(root)
    (array,) = cached_arrays(cache_dir, 24)
    assert str(array) in mapped_files()
    for name in ("train", "val", "test"):  # the same pixels and splits either way
        assert torch.equal(dm.splits[name].images, plain.splits[name].images)
        assert dm.splits[name].sources == plain.splits[name].sources
    assert dm.splits["train"].pixels.data_ptr() == dm.splits["test"].pixels.data_ptr()  # one map for all splits
    off = datamodule(root, img_size=20, cache=False)
    assert off.splits["train"].images.shape[-1] == 20 and not cached_arrays(cache_dir, 20)


PROCESS = """
import sys
from pathlib import Path
from cnnlab.data.eurosat import EuroSATDataModule
dm = EuroSATDataModule(root=sys.argv[1], img_size=64, seed=0)
dm.setup()
total = sum(int(split.images.sum()) for split in dm.splits.values())  # touches every page of the map
Path(sys.argv[2]).write_text(str(total))
sys.stdin.read()  # stay alive until the test has read our memory
"""


def mapping_kb(pid: int, path: Path) -> dict[str, int]:
    """Rss and Pss (kB) of ``pid``'s mapping of ``path``, from /proc/<pid>/smaps."""
    lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(str(path)))
    fields = {}
    for line in lines[start + 1 :]:
        key, _, value = line.partition(":")
        if not value.strip().endswith("kB"):
            break
        fields[key] = int(value.split()[0])
    return fields


def test_two_processes_share_one_copy_of_the_cache(tmp_path, cache_dir):
    root = write_eurosat(tmp_path / "data", per_class=40)  # 400 images: 4.7 MiB of pixels
    from cnnlab.data.eurosat import EuroSATDataModule

    EuroSATDataModule(root=root, img_size=64).prepare_data()
    (array,) = cached_arrays(cache_dir, 64)
    processes = [
        subprocess.Popen([sys.executable, "-c", PROCESS, str(root), str(tmp_path / f"ready{i}")], stdin=subprocess.PIPE)
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 300
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "a process failed"
            time.sleep(0.2)
        mappings = [mapping_kb(p.pid, array) for p in processes]
    finally:
        for p in processes:
            p.communicate(b"")
    size_kb = array.stat().st_size / 1024
    assert (tmp_path / "ready0").read_text() == (tmp_path / "ready1").read_text()
    for mapping in mappings:
        assert mapping["Rss"] >= 0.95 * size_kb  # all of it read ...
        assert mapping["Pss"] <= 0.55 * size_kb  # ... and each page counted half in each: one copy
        assert mapping["Private_Dirty"] == 0  # nothing copied on write


# -- written once, by concurrent first runs ---------------------------------------------------------------
CONCURRENT = """
import logging, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import torchvision.datasets
from fakedata import write_eurosat

root, downloads = Path(sys.argv[1]), Path(sys.argv[2])

def download(self):  # stands in for the network: slow, and fails if two processes write at once
    if self._check_exists():
        return
    with open(downloads, "a") as log:
        log.write("download\\n")
    time.sleep(1)
    write_eurosat(root, per_class=8)  # mkdir(parents=True) without exist_ok: a second writer fails

torchvision.datasets.EuroSAT.download = download
logging.basicConfig(level=logging.INFO, format="%(message)s")
from cnnlab.data.eurosat import EuroSATDataModule
dm = EuroSATDataModule(root=root, img_size=32, seed=0, download=True)
dm.prepare_data()
dm.setup()
print("test split", dm.splits["test"].sources)
"""


def test_processes_started_together_download_once_and_decode_once(tmp_path, cache_dir):
    """As torchrun or SLURM start all ranks at once: one downloads, one decodes, the others wait."""
    root, downloads = tmp_path / "data", tmp_path / "downloads.txt"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(root), str(downloads), str(TESTS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert downloads.read_text() == "download\n"
    assert sum(out.count("decoding 80 images") for out in outputs) == 1
    assert all("memory-mapped 80 decoded images" in out for out in outputs)
    assert outputs[0].split("test split")[1] == outputs[1].split("test split")[1]
    assert len(cached_arrays(cache_dir, 32)) == 1 and not list(cache_dir.rglob("*.tmp"))


# -- full disks and read-only data ------------------------------------------------------------------------
@contextlib.contextmanager
def mounted(folder: Path, *options: str):
    """``mount`` over ``folder`` (root only; skips the test elsewhere), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", *options, str(folder)], capture_output=True).returncode:
        pytest.skip("needs root to mount a tmpfs or a read-only bind mount")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def tiny_tmpfs(folder: Path):
    return mounted(folder, "-t", "tmpfs", "-o", "size=512k", "tmpfs")


def test_cli_on_a_full_cache_disk_warns_once_and_trains_in_memory(cnnlab, tmp_path):
    root = write_eurosat(cnnlab.cwd / "data", per_class=10)  # 100 images: 1.2 MB of pixels at 64 px
    with tiny_tmpfs(tmp_path / "full") as full:
        cnnlab(
            "data=eurosat",
            f"data.root={root}",
            "data.img_size=64",
            "debug=smoke",
            "test=false",
            CNNLAB_CACHE_DIR=str(full),
        )
        leftovers = [p.name for p in full.rglob("*") if p.is_file() and p.suffix != ".lock"]
    (run,) = run_dirs(cnnlab.cwd)
    assert run_log(run).count("could not write the decoded-image cache") == 1
    assert "No space left on device" in run_log(run) and "decoding 100 images" in run_log(run)
    assert leftovers == []


def test_disk_filling_up_while_writing_leaves_no_temporary_file(tmp_path, monkeypatch, caplog):
    root = write_eurosat(tmp_path / "data", per_class=10)
    from cnnlab.data.eurosat import EuroSATDataModule

    with tiny_tmpfs(tmp_path / "full") as full:
        monkeypatch.setenv("CNNLAB_CACHE_DIR", str(full))
        roomy = SimpleNamespace(total=2**40, used=0, free=2**40)
        monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: roomy)  # plenty of room, it says
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                dm = EuroSATDataModule(root=root, img_size=64, seed=0)
                dm.prepare_data()  # the write itself fails, with ENOSPC
                dm.setup()
        leftovers = [p.name for p in full.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftovers == [] and len(dm.splits["train"]) == 60
    assert caplog.text.count("could not write the decoded-image cache") == 1 and "No space left" in caplog.text


def test_cli_trains_on_a_read_only_dataset_without_warnings(cnnlab, tmp_path):
    root = write_image_folder(cnnlab.cwd / "images")
    (root / "blight" / "corrupt.jpg").unlink()  # its warning is not the point here
    before = tree(root)
    with mounted(root, "--bind", "-o", "ro", str(root)):
        with pytest.raises(OSError):
            (root / "probe").write_text("")
        result = cnnlab("data=imagefolder", f"data.root={root}", *SMOKE)
    (run,) = run_dirs(cnnlab.cwd)
    assert "WARNING" not in run_log(run) and "WARNING" not in result.stdout + result.stderr
    assert "decoding 30 images" in run_log(run) and tree(root) == before
