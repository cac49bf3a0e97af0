"""Scaling out: DDP on 2 CPU processes, parallel sweep jobs with joblib, the SLURM preset, and the
mixed-precision and channels-last switches."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, read_results, run_dirs, start_cli, wait_for_file
from fakedata import write_eurosat
from hydra import compose, initialize_config_module


def test_ddp_sweep_job_on_two_cpu_processes_writes_one_run_dir(cnnlab, cache_dir):
    """A one-job multirun: the launcher's re-run of the job must land in that job's dir, not start a sweep.
    Rank zero decodes the cache before the launcher starts rank one, which maps it."""
    root = write_eurosat(cnnlab.cwd / "data")
    result = cnnlab(
        "-m",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "debug=smoke",
        "data=eurosat",
        f"data.root={root}",
        "data.img_size=32",
        "trainer.max_epochs=2",
        "optim.lr=1e-3",
    )
    output = result.stdout + result.stderr
    assert "Starting with 2 processes" in output
    assert output.count("decoding 100 images") == 1 and len(list(cache_dir.glob("images-v*/*.npy"))) == 1
    (run,) = run_dirs(cnnlab.cwd)
    assert run.name == "0" and [p.name for p in run.parent.iterdir() if p.is_dir()] == ["0"]
    assert list((cnnlab.cwd / "outputs").iterdir()) == [cnnlab.cwd / "outputs" / "multirun"]
    results = read_results(run)
    assert results["status"] == "completed" and results["world_size"] == 2 and results["epochs_run"] == 2
    assert 0.0 <= results["test/acc"] <= 1.0 and (run / "report").is_dir()
    # the report holds both ranks' test logits, gathered back into test-split order
    rows = (run / "report/predictions.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == (run / "data/test_files.txt").read_text().split()
    accuracy = json.loads((run / "report/classification_report.json").read_text())["accuracy"]
    assert abs(accuracy - results["test/acc"]) < 1e-6
    with open(run / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["epoch"] == "1"]
    # one val row, one train row and one step row (debug=smoke: one batch) for epoch 1: rank 0 alone logs
    assert sorted(next(k for k in ("val/acc", "train/acc", "train/loss_step") if row[k]) for row in rows) == [
        "train/acc",
        "train/loss_step",
        "val/acc",
    ]


def test_torchrun_starts_both_ranks_at_once_and_one_decodes(tmp_path, cache_dir):
    """torchrun (as SLURM) starts every rank together: one decodes into the cache while the other waits
    for it, both map it, and rank zero alone writes the run's data/ files."""
    root = write_eurosat(tmp_path / "data")
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "cnnlab.cli",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "debug=smoke",
            "test=false",
            "data=eurosat",
            f"data.root={root}",
            "data.img_size=32",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert output.count("decoding 100 images") == 1 and output.count("memory-mapped 100 decoded images") == 2
    results = read_results(run)
    assert results["status"] == "completed" and results["world_size"] == 2
    assert len((run / "data/train_files.txt").read_text().split()) == results["split_sizes"]["train"] == 60


def test_joblib_runs_two_jobs_in_parallel(cnnlab):
    result = cnnlab("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "debug=smoke", "optim.lr=1e-3,1e-2")
    assert "Launching 2 jobs, 2 at a time" in result.stdout + result.stderr
    runs = run_dirs(cnnlab.cwd)
    assert [read_results(r)["status"] for r in runs] == ["completed", "completed"]
    assert "Summary of 2 runs" in (runs[0].parent / "summary.md").read_text()


def ancestors(pid: int) -> list[int]:
    """The parent, grandparent, ... of process ``pid``, from /proc."""
    chain = []
    while pid > 1:
        pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def job_worker(run_dir: Path, master: int) -> int:
    """The process running the sweep job of ``run_dir``: the topmost process below ``master`` holding a file
    in ``run_dir`` open (the job's log file; children it forks inherit it), found in /proc."""
    holders = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == master:
            continue
        try:
            chain = ancestors(int(proc.name))
            if master in chain and any(
                os.readlink(fd).startswith(f"{run_dir}{os.sep}") for fd in (proc / "fd").iterdir()
            ):
                holders[int(proc.name)] = chain
        except (OSError, ValueError):  # ended meanwhile
            continue
    (worker,) = [pid for pid, chain in holders.items() if not set(chain) & set(holders)]
    return worker


@pytest.mark.parametrize(
    ("sent", "status", "error"),
    [
        (signal.SIGKILL, "lost", "worker process died"),  # killed outright, as by the OOM killer
        (signal.SIGTERM, "interrupted", "interrupted by SIGTERM"),  # stopped, e.g. by `kill` or a scheduler
    ],
)
def test_joblib_sweep_goes_on_when_a_job_is_killed(tmp_path, sent, status, error):
    """A job whose worker process is killed or stopped is recorded as lost or interrupted; the other job
    completes and the summary lists both with their run dirs; the sweep exits with 0 as any sweep that ran to
    its end. Job 0 trains long enough to be stopped midway (no early stopping); job 1 one epoch."""
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "debug=smoke", "trainer.max_epochs=500,1"]
    args.append("callbacks.early_stopping.patience=1000")
    master = start_cli(args, tmp_path, command=(str(Path(sys.executable).parent / "cnnlab"),))
    metrics = wait_for_file("outputs/multirun/*/*/0/metrics.csv", tmp_path, master)
    os.kill(job_worker(metrics.parent, master.pid), sent)
    _, stderr = master.communicate(timeout=600)
    assert master.returncode == 0, stderr[-3000:]
    assert "TerminatedWorkerError" not in stderr and "Traceback" not in stderr
    sweep = metrics.parent.parent
    stopped, completed = read_results(sweep / "0"), read_results(sweep / "1")
    assert (stopped["status"], completed["status"]) == (status, "completed")
    assert error in stopped["error"] and (sent != signal.SIGKILL or "SIGKILL" in stopped["error"])
    summary = (sweep / "summary.md").read_text()
    assert "1 completed, 1 not" in summary
    assert f"| 0 | 500 | {status} |" in summary and "| 1 | 1 | completed |" in summary  # run dir, epochs, status


def test_ctrl_c_stops_a_joblib_sweep_as_it_stops_a_run(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: each job's run records its interruption and the
    sweep exits with 130 and one line, as a run does, instead of the master's KeyboardInterrupt traceback."""
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "debug=smoke", "trainer.max_epochs=500,400"]
    master = subprocess.Popen(
        [str(Path(sys.executable).parent / "cnnlab"), *args],
        cwd=tmp_path,
        env=cli_env(),
        process_group=0,  # its own group, as a terminal's foreground job
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_file("outputs/multirun/*/*/1/metrics.csv", tmp_path, master)
    os.killpg(master.pid, signal.SIGINT)
    _, stderr = master.communicate(timeout=300)
    assert master.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert "cnnlab: sweep interrupted by SIGINT" in stderr.splitlines()[-1]
    sweep = next((tmp_path / "outputs/multirun").glob("*/*"))
    assert [read_results(sweep / job)["status"] for job in "01"] == ["interrupted", "interrupted"]


def test_bf16_mixed_precision_and_channels_last_train(cnnlab):
    cnnlab("debug=smoke", "trainer.precision=bf16-mixed", "model.channels_last=true")
    (run,) = run_dirs(cnnlab.cwd)
    assert read_results(run)["status"] == "completed"


@pytest.mark.parametrize(("preset", "gpus", "cpus"), [("slurm", None, 2), ("slurm_gpu", 1, 8)])
def test_slurm_launcher_preset_composes(preset, gpus, cpus):
    """The CPU preset asks for no GPU (it fits a CPU partition); the GPU variant for one per job."""
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"hydra/launcher={preset}", "hydra.launcher.partition=p"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "p"
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.tasks_per_node) == (gpus, cpus, 1)
