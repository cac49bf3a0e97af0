"""The memory-mapped decoded-image cache (issue 20), measured on a generated EuroSAT-layout folder
(``tests/fakedata.py``), 64 px, 27,000 images by default (a 332 MB cache):

``memory``   summed proportional memory (PSS, /proc/<pid>/smaps_rollup, every process of the run) of a
             2-process CPU DDP run against a 1-process run, the cache's own share (its mapping's PSS) apart;
             with ``--in-memory`` also both runs with ``data.cache=false`` (each process decodes its own copy).
``speed``    the time to gather an epoch of shuffled batches from the memory-mapped cache and from an in-memory
             copy; then training images/s of bench.py's ``cnnlab`` mode with the memory-mapped cache against
             the in-memory tensor (``data.cache=false``), the two alternating for ``--rounds`` rounds.
``limited``  a run whose cache is larger than the memory it may use: a cgroup (v2 ``memory.max``, else v1
             ``memory.limit_in_bytes``) made as a child of this process's own, with the cache and then, for
             contrast, the in-memory tensor.

    python benchmarks/data_cache.py memory --output benchmarks/results-DATE-MACHINE/cache-memory.json
    python benchmarks/data_cache.py speed --rounds 3 --output .../cache-speed.json
    python benchmarks/data_cache.py limited --img-size 128 --memory-max-mb 1024 --output .../cache-limited.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakedata import write_eurosat  # noqa: E402  (the real on-disk layout the tests use)

ENV = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
    }


def eurosat_folder(data_dir: Path, images: int) -> Path:
    """A data root with ``eurosat/2750/<Class>/*.jpg`` (64 px), made once per image count."""
    root = data_dir / f"eurosat-{images}"
    if not (root / ".complete").exists():
        write_eurosat(root, per_class=images // 10)
        (root / ".complete").touch()
    return root


def prepare_cache(root: Path, img_size: int, cache_dir: Path) -> Path:
    """Decode the folder into the cache (outside the timed runs); the path of its ``.npy``."""
    env = {**os.environ, **ENV, "CNNLAB_CACHE_DIR": str(cache_dir)}
    code = (
        "import sys; from cnnlab.data.eurosat import EuroSATDataModule; "
        "EuroSATDataModule(root=sys.argv[1], img_size=int(sys.argv[2])).prepare_data()"
    )
    subprocess.run([sys.executable, "-c", code, str(root), str(img_size)], env=env, check=True)
    (array,) = cache_dir.glob(f"images-v*/2750-*-{img_size}px-*.npy")
    return array


# -- memory ---------------------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in children.read_text().split()]
    return found


def pss_kb(pid: int, cache_file: Path) -> tuple[int, int]:
    """(all of the process's PSS, the PSS of its mappings of ``cache_file``) in kB."""
    total = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            if line.startswith("Pss:")
        )
    )
    cache, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if not line.split()[0].endswith(":"):  # a mapping's header: address range, ..., path
            inside = line.endswith(str(cache_file))
        elif inside and line.startswith("Pss:"):
            cache += int(line.split()[1])
    return total, cache


def run_sampled(args: list[str], env: dict, cache_file: Path, interval: float = 1.0) -> dict:
    """Run ``cnnlab args``; every ``interval`` s sum the PSS of its process tree. The sample with the
    largest sum, split per process into cache and the rest."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    peak: dict = {"total_mb": 0.0}
    start = time.perf_counter()
    while process.poll() is None:
        sample = []
        for pid in process_tree(process.pid):
            with contextlib.suppress(OSError, StopIteration, ValueError):
                sample.append((pid, *pss_kb(pid, cache_file)))
        total = sum(s[1] for s in sample) / 1024
        if total > peak["total_mb"]:
            peak = {
                "total_mb": round(total, 1),
                "cache_mb": round(sum(s[2] for s in sample) / 1024, 1),
                "processes": [
                    {
                        "pid": pid,
                        "pss_mb": round(p / 1024, 1),
                        "cache_pss_mb": round(c / 1024, 1),
                        "other_pss_mb": round((p - c) / 1024, 1),
                    }
                    for pid, p, c in sample
                ],
                "at_sec": round(time.perf_counter() - start, 1),
            }
        time.sleep(interval)
    reader.join()
    if process.returncode:
        raise RuntimeError(f"cnnlab {' '.join(args)} failed:\n{''.join(output)[-4000:]}")
    return {"args": args, "wall_sec": round(time.perf_counter() - start, 1), "peak": peak}


def run_overrides(opts: argparse.Namespace, root: Path, runs_dir: str, *extra: str) -> list[str]:
    """One training epoch on the generated folder, no test, no progress bar, each run in its own dir."""
    return [
        "data=eurosat",
        f"data.root={root}",
        "data.download=false",
        f"data.img_size={opts.img_size}",
        f"model={opts.model}",
        "trainer.max_epochs=1",
        "test=false",
        "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false",
        *extra,
        f"hydra.run.dir={opts.workdir}/{runs_dir}/${{now:%H-%M-%S-%f}}",
        *opts.overrides,
    ]


def measure_memory(opts: argparse.Namespace, root: Path, cache_dir: Path, cache_file: Path) -> dict:
    env = {**os.environ, **ENV, "CNNLAB_CACHE_DIR": str(cache_dir)}
    common = run_overrides(opts, root, "runs")
    layouts = {"one_process": [], "two_process_ddp": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]}
    variants = {"mmap_cache": []} | ({"in_memory": ["data.cache=false"]} if opts.in_memory else {})
    runs = {
        f"{variant}/{layout}": run_sampled([*common, *extra, *flags], env, cache_file)
        for variant, flags in variants.items()
        for layout, extra in layouts.items()
    }
    verdict = {}
    for variant in variants:
        one, two = runs[f"{variant}/one_process"]["peak"], runs[f"{variant}/two_process_ddp"]["peak"]
        non_cache = max(p["other_pss_mb"] for p in one["processes"])
        verdict[variant] = {
            "two_minus_one_mb": round(two["total_mb"] - one["total_mb"], 1),
            "one_process_non_cache_mb": non_cache,
            "cache_file_mb": round(cache_file.stat().st_size / 2**20, 1),
            "cache_counted_once": two["total_mb"] - one["total_mb"] <= non_cache,
        }
    return {"runs": runs, "verdict": verdict}


# -- speed ----------------------------------------------------------------------------------------
def measure_speed(opts: argparse.Namespace, cache_dir: Path) -> dict:
    """bench.py's ``cnnlab`` mode, memory-mapped cache and in-memory tensor alternating."""
    env = {**os.environ, **ENV, "CNNLAB_CACHE_DIR": str(cache_dir)}
    rates: dict[str, list[float]] = {"mmap_cache": [], "in_memory": []}
    reports: dict[str, list[dict]] = {"mmap_cache": [], "in_memory": []}
    for round_ in range(opts.rounds):
        for variant, flags in (("mmap_cache", []), ("in_memory", ["data.cache=false"])):
            out = Path(opts.workdir) / f"speed-{variant}-{round_}.json"
            subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).with_name("bench.py")),
                    "--model",
                    opts.model,
                    "--modes",
                    "cnnlab",
                    "--img-size",
                    str(opts.img_size),
                    "--images",
                    str(opts.bench_images),
                    "--epochs",
                    str(opts.epochs),
                    "--rounds",
                    "1",
                    "--data-dir",
                    str(Path(opts.data_dir) / "bench"),
                    "--output",
                    str(out),
                    *flags,
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            report = json.loads(out.read_text())
            reports[variant].append(report)
            rates[variant].append(report["runs"][0]["modes"]["cnnlab"]["img_per_s"])
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    return {
        "img_per_s": rates,
        "median_img_per_s": median,
        "mmap_vs_in_memory": round(median["mmap_cache"] / median["in_memory"], 3),
        "bench_reports": reports,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_gather(cache_file: Path, batch_size: int, repeats: int) -> dict:
    """Wall and CPU (user + system, page faults included) seconds to gather one shuffled epoch of batches
    (``Split.gather``'s two ``index_select``) from the memory-mapped cache and from an in-memory copy of
    it, alternating, after a first pass that maps the pages. CPU time is the figure to read on a loaded
    machine, where wall time mostly measures the other processes."""
    import numpy as np
    import torch

    from cnnlab.data.base import Split

    mapped = torch.from_numpy(np.load(cache_file, mmap_mode="c"))
    labels, rows = torch.zeros(len(mapped), dtype=torch.long), torch.arange(len(mapped))
    splits = {"mmap_cache": Split(mapped, labels, rows=rows), "in_memory": Split(mapped.clone(), labels, rows=rows)}
    seconds: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in splits}
    for repeat in range(repeats + 1):
        order = torch.randperm(len(mapped), generator=torch.Generator().manual_seed(repeat))
        for name, split in splits.items():
            wall, cpu = time.perf_counter(), _cpu_seconds()
            for batch in order.split(batch_size):
                split.gather(batch)
            if repeat:
                seconds[name]["wall"].append(round(time.perf_counter() - wall, 3))
                seconds[name]["cpu"].append(round(_cpu_seconds() - cpu, 3))
    median = {name: {kind: sorted(v)[len(v) // 2] for kind, v in kinds.items()} for name, kinds in seconds.items()}
    return {
        "images": len(mapped),
        "batch_size": batch_size,
        "epoch_seconds": seconds,
        "median_seconds": median,
        "mmap_vs_in_memory_cpu": round(median["mmap_cache"]["cpu"] / median["in_memory"]["cpu"], 3),
        "mmap_vs_in_memory_wall": round(median["mmap_cache"]["wall"] / median["in_memory"]["wall"], 3),
    }


# -- a cache larger than the memory allowed ---------------------------------------------------------
@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[tuple[Path, str]]:
    """A child of this process's own memory cgroup limited to ``limit_bytes``: (its folder, the file that
    holds its usage peak). cgroup v2 (``memory.max``) where this process is in one, else v1."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v2 = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), None)
    v1 = next((line.split(":", 2)[2] for line in lines if ":memory:" in line), None)
    if v1 is not None:
        group, limit_file, peak_file = (
            Path("/sys/fs/cgroup/memory") / v1.lstrip("/") / "cnnlab-cache-bench",
            "memory.limit_in_bytes",
            "memory.max_usage_in_bytes",
        )
    else:
        group, limit_file, peak_file = (
            Path("/sys/fs/cgroup") / (v2 or "").lstrip("/") / "cnnlab-cache-bench",
            "memory.max",
            "memory.peak",
        )
    group.mkdir()
    try:
        (group / limit_file).write_text(str(limit_bytes))
        yield group, peak_file
    finally:
        time.sleep(1)
        group.rmdir()


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache, so that a run reads (and is charged for) them anew."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_limited(args: list[str], env: dict, group: Path, peak_file: str) -> dict:
    """``cnnlab args`` inside ``group`` (the shell joins it, then becomes cnnlab)."""
    command = f'echo $$ > {group}/cgroup.procs && exec {sys.executable} -m cnnlab.cli "$@"'
    start = time.perf_counter()
    result = subprocess.run(["sh", "-c", command, "sh", *args], env=env, capture_output=True, text=True)
    events = {}
    for name in ("memory.events", "memory.failcnt", "memory.oom_control"):
        with contextlib.suppress(OSError):
            events[name] = (group / name).read_text().strip()
    return {
        "args": args,
        "returncode": result.returncode,
        "completed": result.returncode == 0,
        "wall_sec": round(time.perf_counter() - start, 1),
        "peak_usage_mb": round(int((group / peak_file).read_text()) / 2**20, 1),
        "events": events,
        "tail": (result.stdout + result.stderr)[-1500:],
    }


def measure_limited(opts: argparse.Namespace, root: Path, cache_dir: Path, cache_file: Path) -> dict:
    env = {**os.environ, **ENV, "CNNLAB_CACHE_DIR": str(cache_dir)}
    common = run_overrides(opts, root, "limited", f"trainer.limit_train_batches={opts.limit_train_batches}")
    runs = {}
    with memory_cgroup(opts.memory_max_mb * 2**20) as (group, peak_file):
        evict(cache_file)  # pages already cached were charged to whoever read them first
        runs["mmap_cache"] = run_limited(common, env, group, peak_file)
    if opts.in_memory:
        with memory_cgroup(opts.memory_max_mb * 2**20) as (group, peak_file):
            runs["in_memory"] = run_limited([*common, "data.cache=false"], env, group, peak_file)
    return {
        "memory_max_mb": opts.memory_max_mb,
        "cache_file_mb": round(cache_file.stat().st_size / 2**20, 1),
        "cgroup": "child of this process's memory cgroup",
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("memory", "speed", "limited"))
    parser.add_argument("overrides", nargs="*", help="memory, limited: cnnlab overrides for every run")
    parser.add_argument("--images", type=int, default=27_000)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--model", default="mobilenetv3_small")
    parser.add_argument("--rounds", type=int, default=3, help="speed: alternations of cache and in-memory")
    parser.add_argument("--bench-images", type=int, default=3000, help="speed: images of bench.py's folder")
    parser.add_argument("--epochs", type=int, default=3, help="speed: epochs per cnnlab-bench run, the first warm-up")
    parser.add_argument("--memory-max-mb", type=int, default=1024, help="limited: the cgroup's limit")
    parser.add_argument(
        "--limit-train-batches", default="1.0", help="limited: trainer.limit_train_batches (validation is whole)"
    )
    parser.add_argument("--in-memory", action="store_true", help="memory, limited: also with data.cache=false")
    parser.add_argument("--data-dir", default="/tmp/cnnlab-cache-bench/data", help="generated folders, kept")
    parser.add_argument("--workdir", default=None, help="cache and run dirs (default: a temporary folder)")
    parser.add_argument("--output", default=None)
    opts = parser.parse_intermixed_args()
    with tempfile.TemporaryDirectory(prefix="cnnlab-cache-bench-") as tmp:
        opts.workdir = opts.workdir or tmp
        cache_dir = Path(opts.workdir) / "cache"
        report: dict = {"machine": machine(), "args": vars(opts)}
        if opts.what == "speed":
            root = eurosat_folder(Path(opts.data_dir), opts.images)
            report["gather"] = measure_gather(prepare_cache(root, opts.img_size, cache_dir), 64, 5)
            report["speed"] = measure_speed(opts, cache_dir)
        else:
            root = eurosat_folder(Path(opts.data_dir), opts.images)
            cache_file = prepare_cache(root, opts.img_size, cache_dir)
            measure = measure_memory if opts.what == "memory" else measure_limited
            report[opts.what] = measure(opts, root, cache_dir, cache_file)
        report["machine"]["load_average_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if opts.output:
        Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
