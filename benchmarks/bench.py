"""cnnlab's training benchmark (``cnnlab-bench``), run from a checkout: training images/s of a model alone
(``floor``), of cnnlab's real training path (``cnnlab``) and of the usual ImageFolder + PIL +
DataLoader-workers recipe (``conventional``), on a generated image folder in EuroSAT's layout, so that it
runs offline. ``floor`` and ``cnnlab`` run in this process with cnnlab's settings (``tune_malloc``
included); ``conventional`` in a second process with glibc's malloc thresholds as they are, torch's default
(unfused) optimizer and torch's own depthwise-convolution gradient, as the recipe runs anywhere else.
Allocator settings read from the environment at start-up (``GLIBC_TUNABLES``, ``LD_PRELOAD``) apply to
every mode. On request, ``feed`` runs the floor's plain loop on cnnlab's own batches (cache, float
conversion, augmentation) without Lightning, which splits cnnlab's cost against the floor into the data
path's and Lightning's; ``--startup N`` times bare ``cnnlab`` runs to their first training step.

Modes run in interleaved rounds (floor, cnnlab, conventional, floor, ...) so that a change in the
machine's load during the run hits every mode alike; each mode's figure is the median of its timed
windows (floor: as many steps as an epoch, by default) or full epochs after the first (cnnlab,
conventional, feed) over all rounds.

    python benchmarks/bench.py --model mobilenetv3_small --model "mobilenetv3_small model.net.hybrid=true" --rounds 2
    python benchmarks/bench.py --model cnn_baseline_s4 --model resnet18_s2 --img-size 32 data/augment=cifar_s4
    python benchmarks/bench.py --model cnn_baseline_s2 --img-size 32 --images 12800 --modes floor,feed,cnnlab --rounds 5

See benchmarks/README.md for what each mode measures and the figures measured so far.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig
from torchvision.datasets import ImageFolder

from cnnlab.nn.depthwise import set_gram_gradient
from cnnlab.training.allocator import huge_pages_requested, keep_freed_memory, malloc_tuned, preloaded_allocator
from cnnlab.training.precision import autocast, cpu_supports_bf16, run_precision, uses_cuda

# feed (the floor's loop on cnnlab's batches) splits cnnlab's cost into data path and Lightning; run on request
MODES = ("floor", "cnnlab", "conventional", "feed")
DEFAULT_MODES = MODES[:3]
EUROSAT_CLASSES = (
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
)


# -- data -------------------------------------------------------------------------------------------
def make_eurosat_folder(data_dir: Path, num_images: int, img_size: int, seed: int = 0) -> Path:
    """A data root holding ``eurosat/2750/<Class>/<Class>_<n>.jpg`` (``num_images`` smooth random
    jpgs at ``img_size``); made once per (count, size) and reused."""
    from PIL import Image

    root = Path(data_dir).resolve() / f"eurosat-{num_images}-{img_size}px"
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for n in range(num_images):
        name = EUROSAT_CLASSES[n % len(EUROSAT_CLASSES)]
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((img_size, img_size), Image.Resampling.BICUBIC)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (img_size, img_size, 3))
        path = root / "eurosat" / "2750" / name / f"{name}_{n // len(EUROSAT_CLASSES) + 1}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    done.touch()
    return root


def compose_config(
    model_spec: str, data_root: Path, img_size: int, batch_size: int, overrides: list[str], output_dir: Path
) -> DictConfig:
    """cnnlab's own run config (``conf/train.yaml``) for ``model_spec`` ("name [key=value ...]") on
    the generated EuroSAT folder: the precision, memory format and augmentation a run would use."""
    from hydra import compose, initialize_config_module

    name, *model_overrides = model_spec.split()
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"model={name}",
                "data=eurosat",
                f"data.root={data_root}",
                "data.download=false",
                f"data.img_size={img_size}",
                f"data.batch_size={batch_size}",
                f"paths.output_dir={output_dir}",
                *overrides,
                *model_overrides,
            ],
        )


# -- measuring --------------------------------------------------------------------------------------
def _rss_bytes(pid: int | str) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _process_tree_rss() -> int:
    """Resident memory of this process and its children (DataLoader workers), from /proc."""
    children = []
    for task in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += task.read_text().split()
    return _rss_bytes("self") + sum(_rss_bytes(pid) for pid in children)


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict) -> Iterator[None]:
    """Record ``peak_mem_mb`` in ``into``: peak device memory on CUDA, else the peak resident memory of
    the process tree, sampled every 20 ms (Linux /proc; 0 elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        into["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        return
    peak, stop = [_process_tree_rss()], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _process_tree_rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        into["peak_mem_mb"] = round(peak[0] / 2**20, 1)


def with_peak_memory(device: torch.device, measure: Callable[[], dict]) -> dict:
    """``measure()``'s figures plus the ``peak_mem_mb`` reached while it ran."""
    measured: dict = {}
    with peak_memory(device, measured):
        measured.update(measure())
    return measured


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    net: Callable, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, precision: str
) -> None:
    """One forward + backward + optimizer step, as Lightning's automatic optimization does it."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, images.device):
        loss = F.cross_entropy(net(images), labels)
    loss.backward()
    optimizer.step()


def module_and_optimizer(
    cfg: DictConfig, datamodule: Any, device: torch.device
) -> tuple[LightningModule, torch.optim.Optimizer]:
    """cnnlab's module for ``cfg`` on ``device``, in training mode, and the optimizer it configures."""
    from cnnlab.train import build_module

    module = build_module(cfg, datamodule).to(device).train()
    optimizer = module.configure_optimizers()
    return module, optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer


def after_warmup(samples: list[float]) -> list[float]:
    """All but the first epoch's figure, which pays warm-up costs (the first if it is alone)."""
    return samples[1:] or samples


def time_epochs(
    loader: Iterable, epochs: int, device: torch.device, step: Callable[[torch.Tensor, torch.Tensor], None]
) -> list[float]:
    """Wall seconds of each of ``epochs`` passes of ``step(images, labels)`` over ``loader``, the device
    synchronized around each."""
    seconds = []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        for images, labels in loader:
            step(images, labels)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_floor(
    cfg: DictConfig, datamodule: Any, device: torch.device, windows: int, window_steps: int, warmup: int
) -> dict:
    """The model alone on batches already in memory, in cnnlab's precision and memory format."""
    module, optimizer = module_and_optimizer(cfg, datamodule, device)
    batch_size, size = cfg.data.batch_size, datamodule.img_size
    memory_format = torch.channels_last if module.channels_last else torch.contiguous_format
    batches = [
        (
            torch.rand(batch_size, datamodule.in_chans, size, size, device=device).contiguous(
                memory_format=memory_format
            ),
            torch.randint(0, datamodule.num_classes, (batch_size,), device=device),
        )
        for _ in range(4)
    ]
    precision = str(cfg.trainer.precision)
    for step in range(warmup):
        train_step(module, optimizer, *batches[step % len(batches)], precision)
    rates = []
    for _ in range(windows):
        _sync(device)
        start = time.perf_counter()
        for step in range(window_steps):
            train_step(module, optimizer, *batches[step % len(batches)], precision)
        _sync(device)
        rates.append(batch_size * window_steps / (time.perf_counter() - start))
    return {"samples": rates}


def measure_feed(cfg: DictConfig, datamodule: Any, device: torch.device, epochs: int) -> dict:
    """The floor's plain loop over full epochs of cnnlab's own batches (the uint8 cache, the datamodule's
    float conversion and augmentation, channels-last in the module), without Lightning: against ``floor``
    it prices cnnlab's data path, against ``cnnlab`` Lightning's loop. On a GPU, batches are copied to the
    device while the cache is still on the host (a run moves it there once)."""
    module, optimizer = module_and_optimizer(cfg, datamodule, device)
    precision = str(cfg.trainer.precision)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        train_step(
            module, optimizer, *datamodule.model_inputs((images.to(device), labels.to(device)), augment=True), precision
        )

    seconds = time_epochs(datamodule.train_dataloader(), epochs, device, step)
    return {"samples": [len(datamodule.splits["train"]) / s for s in after_warmup(seconds)]}


class ValidationTimer(Callback):
    """Wall time of each validation epoch (sanity check excluded): the eval path's throughput."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self._start)


def measure_cnnlab(cfg: DictConfig, datamodule: Any, epochs: int) -> dict:
    """A real ``Trainer.fit`` through the DataModule (train augmentation on) and ImageClassifier, with
    validation after each epoch as in a run; training timed over full epochs by :class:`EpochTimer`
    (validation excluded), validation by :class:`ValidationTimer`."""
    from hydra.utils import instantiate

    from cnnlab.train import build_module
    from cnnlab.training.callbacks import EpochTimer

    module = build_module(cfg, datamodule)
    train_timer, val_timer = EpochTimer(), ValidationTimer()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[train_timer, val_timer],
        max_epochs=epochs,
        min_epochs=epochs,
        limit_train_batches=None,
        limit_val_batches=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    val_seconds = statistics.median(after_warmup(val_timer.seconds))
    return {
        "samples": [len(datamodule.splits["train"]) / s for s in after_warmup(train_timer.train_seconds)],
        "eval_img_per_s": round(len(datamodule.splits["val"]) / val_seconds, 1),
    }


class VisibleImageFolder(ImageFolder):
    """torchvision's ImageFolder minus hidden folders (cnnlab's ``.cnnlab-cache`` is not a class)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        return classes, {name: i for i, name in enumerate(classes)}


def conventional_transform(augment: DictConfig | dict) -> Callable:
    """torchvision PIL transforms with the parameters of cnnlab's ``BatchAugment`` preset (the affine
    pads with black, as ``padding_mode=zeros`` does: torchvision's PIL affine has no edge padding)."""
    from torchvision import transforms as T

    ops: list[Callable] = []
    hflip, vflip, degrees, translate, zoom = (
        augment.get(k) or 0.0 for k in ("hflip", "vflip", "degrees", "translate", "zoom")
    )
    if hflip:
        ops.append(T.RandomHorizontalFlip(hflip))
    if vflip:
        ops.append(T.RandomVerticalFlip(vflip))
    if degrees or translate or zoom:
        ops.append(
            T.RandomAffine(
                degrees,
                translate=(translate, translate) if translate else None,
                scale=(1 - zoom, 1 + zoom) if zoom else None,
            )
        )
    return T.Compose([*ops, T.ToTensor()])


def measure_conventional(cfg: DictConfig, datamodule: Any, device: torch.device, epochs: int, workers: int) -> dict:
    """ImageFolder + PIL transforms + ``DataLoader(num_workers=workers)`` + a plain fp32, contiguous loop with
    torch's default (unfused) optimizer and convolution gradients, over as many images per epoch as cnnlab's
    train split."""
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader, Subset

    from cnnlab.train import build_module

    folder = Path(cfg.data.root) / "eurosat" / "2750"
    dataset = VisibleImageFolder(str(folder), transform=conventional_transform(cfg.data.get("augment") or {}))
    num_train = len(datamodule.splits["train"])
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:num_train].tolist()
    loader = DataLoader(
        Subset(dataset, chosen),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    net = build_module(cfg, datamodule).net.to(device, memory_format=torch.contiguous_format).train()
    set_gram_gradient(net, False)  # torch's own depthwise gradient, as a plain nn.Conv2d trains
    # the config's optimizer and hyperparameters in torch's default implementation, as a plain loop builds it
    optimizer = instantiate({k: v for k, v in cfg.optim.items() if k != "fused"})(params=net.parameters())

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        train_step(
            net, optimizer, images.to(device, non_blocking=True), labels.to(device, non_blocking=True), "32-true"
        )

    return {"samples": [num_train / s for s in after_warmup(time_epochs(loader, epochs, device, step))]}


def conventional_with_peak_memory(cfg: DictConfig, device: torch.device, epochs: int, workers: int) -> dict:
    """:func:`measure_conventional` in a process of its own (see :func:`bench_model`), peak memory included,
    without the NVML-based CUDA check that importing Lightning asks for (a plain PyTorch loop has none)."""
    from cnnlab.train import build_datamodule

    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    return with_peak_memory(device, lambda: measure_conventional(cfg, datamodule, device, epochs, workers))


# -- start-up -------------------------------------------------------------------------------------
def seconds_since_process_start() -> float:
    """Wall time since this process was created (Linux /proc), so imports count too."""
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


class FirstStepClock(Callback):
    """Writes the seconds from process start to the first training batch into ``path``; added to a bare
    ``cnnlab`` run by :func:`measure_startup` with ``+callbacks.first_step=...`` (as ``bench.FirstStepClock``,
    this file's folder on the run's PYTHONPATH)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.path.exists():
            self.path.write_text(f"{seconds_since_process_start():.3f}")


def measure_startup(data_root: Path, img_size: int, repeats: int) -> dict:
    """Seconds a bare ``cnnlab`` run (EuroSAT data, decoded cache warm) spends before its first training
    step, best of ``repeats`` subprocesses."""
    figures = []
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(repeats):
            clock = Path(tmp) / f"first_step_{n}.txt"
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cnnlab.cli",
                    "data=eurosat",
                    f"data.root={data_root}",
                    "data.download=false",
                    f"data.img_size={img_size}",
                    "debug=fast",
                    "test=false",
                    f"hydra.run.dir={tmp}/run{n}",
                    "+callbacks.first_step._target_=bench.FirstStepClock",
                    f"+callbacks.first_step.path={clock}",
                ],
                capture_output=True,
                text=True,
                cwd=tmp,
                env=env,
            )
            if run.returncode != 0:
                raise RuntimeError(f"the start-up run of cnnlab failed:\n{run.stderr[-3000:]}")
            figures.append(float(clock.read_text()))
    return {"sec_to_first_step": min(figures), "samples": figures}


# -- the run ----------------------------------------------------------------------------------------
def machine() -> dict:
    """What the figures were measured on."""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_supported": cpu_supports_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "load_average_start": os.getloadavg(),
    }


def bench_model(
    model_spec: str, args: argparse.Namespace, data_root: Path, workdir: Path, conventional_process: Executor
) -> dict:
    """All requested modes of one model, interleaved over ``args.rounds`` rounds; ``conventional`` runs in
    ``conventional_process``, a process of its own without cnnlab's malloc thresholds, as the recipe would."""
    from cnnlab.train import build_datamodule

    cfg = compose_config(model_spec, data_root, args.img_size, args.batch_size, args.overrides, workdir)
    cfg.trainer.precision = run_precision(cfg)[0]  # what a run would train in (trainer.precision=auto)
    device = torch.device("cuda" if uses_cuda(str(cfg.trainer.accelerator)) else "cpu")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    if cfg.get("tune_malloc"):
        keep_freed_memory()
    window_steps = args.window_steps or math.ceil(len(datamodule.splits["train"]) / args.batch_size)
    runners = {
        "floor": lambda: with_peak_memory(
            device, lambda: measure_floor(cfg, datamodule, device, args.windows, window_steps, args.warmup)
        ),
        "cnnlab": lambda: with_peak_memory(device, lambda: measure_cnnlab(cfg, datamodule, args.epochs)),
        "conventional": lambda: conventional_process.submit(
            conventional_with_peak_memory, cfg, device, args.epochs, args.workers
        ).result(),
        "feed": lambda: with_peak_memory(device, lambda: measure_feed(cfg, datamodule, device, args.epochs)),
    }
    modes: dict[str, dict] = {mode: {"samples": [], "peak_mem_mb": 0.0} for mode in args.modes}
    for _ in range(args.rounds):
        for mode in args.modes:
            measured = runners[mode]()
            entry = modes[mode]
            entry["samples"] += [round(s, 1) for s in measured.pop("samples")]
            entry["peak_mem_mb"] = max(entry["peak_mem_mb"], measured.pop("peak_mem_mb"))
            entry.update(measured)
    for entry in modes.values():
        entry["img_per_s"] = round(statistics.median(entry["samples"]), 1)
    rate = {mode: entry["img_per_s"] for mode, entry in modes.items()}
    ratio = lambda mode, base: round(rate[mode] / rate[base], 3) if {mode, base} <= rate.keys() else None  # noqa: E731
    return {
        "model": model_spec,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.model.get("channels_last", False)),
        "malloc_tuned": malloc_tuned(),
        "huge_pages": huge_pages_requested(),
        "preloaded_allocator": preloaded_allocator(),
        "augment": {k: v for k, v in (cfg.data.get("augment") or {}).items() if k != "_target_"},
        "train_images": len(datamodule.splits["train"]),
        "floor_window_steps": window_steps,
        "modes": modes,
        "cnnlab_vs_floor": ratio("cnnlab", "floor"),
        "cnnlab_vs_conventional": ratio("cnnlab", "conventional"),
        "feed_vs_floor": ratio("feed", "floor"),
        "cnnlab_vs_feed": ratio("cnnlab", "feed"),
    }


def table(runs: list[dict]) -> str:
    """A markdown table: img/s, ratio to floor and to conventional, peak memory, per model and mode."""
    lines = [
        "| model | size | precision | mode | img/s | / floor | / conventional | peak mem (MB) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        floor = run["modes"].get("floor", {}).get("img_per_s")
        conventional = run["modes"].get("conventional", {}).get("img_per_s")
        for mode, entry in run["modes"].items():
            rate = entry["img_per_s"]
            ratio = lambda base: f"{rate / base:.2f}" if base else "-"  # noqa: E731
            extra = f" (eval {entry['eval_img_per_s']:.0f})" if "eval_img_per_s" in entry else ""
            lines.append(
                f"| {run['model']} | {run['img_size']} | {run['precision']} | {mode} | {rate:.0f}{extra} "
                f"| {ratio(floor)} | {ratio(conventional)} | {entry['peak_mem_mb']:.0f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "overrides", nargs="*", help="cnnlab config overrides for every model, e.g. trainer.precision=bf16-mixed"
    )
    parser.add_argument(
        "--model",
        action="append",
        help='model config name plus its own overrides, e.g. "mobilenetv3_small model.net.hybrid=true" (repeatable)',
    )
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        type=lambda s: s.split(","),
        help=f"comma-separated, from {','.join(MODES)} (default: {','.join(DEFAULT_MODES)}); feed is the "
        "floor's plain loop on cnnlab's batches, without Lightning",
    )
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--images", type=int, default=3000, help="images in the generated folder (60%% form the train split)"
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per round for cnnlab, conventional and feed; the first is warm-up"
    )
    parser.add_argument("--windows", type=int, default=5, help="timed windows per round for floor")
    parser.add_argument(
        "--window-steps",
        type=int,
        default=None,
        help="training steps per floor window; default: as many as a cnnlab epoch takes, so that on a "
        "shared machine both figures average over stretches of the same length",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed floor steps per round")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of all modes")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers of conventional")
    parser.add_argument(
        "--startup",
        type=int,
        default=0,
        metavar="N",
        help="also time N bare cnnlab runs up to their first training step",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench"), help="where generated folders are kept")
    parser.add_argument("--output", type=Path, default=Path("bench.json"))
    args = parser.parse_args(argv)
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    args.model = args.model or ["mobilenetv3_small"]
    return args


def main(argv: list[str] | None = None) -> None:
    """Benchmark every ``--model``; print the table and write the JSON (after each model, so a model
    that fails, recorded with its error, or an interrupted bench keeps the figures measured so far)."""
    args = parse_args(argv)
    data_root = make_eurosat_folder(args.data_dir, args.images, args.img_size)
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    results["runs"] = []
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as workdir,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as conventional_process,
    ):
        for spec in args.model:
            try:
                results["runs"].append(bench_model(spec, args, data_root, Path(workdir), conventional_process))
            except Exception as error:  # one broken spec must not cost the others' figures
                results["runs"].append({"model": spec, "error": f"{type(error).__name__}: {error}"})
                print(f"bench.py: {spec!r} failed: {error}", file=sys.stderr)
            args.output.write_text(json.dumps(results, indent=2))
    if args.startup:
        results["startup"] = measure_startup(data_root, args.img_size, args.startup)
    results["machine"]["load_average_end"] = os.getloadavg()
    args.output.write_text(json.dumps(results, indent=2))
    print(table([run for run in results["runs"] if "error" not in run]))
    for run in results["runs"]:
        if "error" in run:
            print(f"{run['model']}: failed ({run['error'].splitlines()[0]})")
    if "startup" in results:
        print(f"\nbare cnnlab, process start to first training step: {results['startup']['sec_to_first_step']:.1f} s")
    print(
        f"\nload average {results['machine']['load_average_start']} -> {results['machine']['load_average_end']}; "
        f"JSON in {args.output}"
    )


if __name__ == "__main__":
    main()
