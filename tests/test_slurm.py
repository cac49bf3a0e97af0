"""Sweeps on a real single-node SLURM (tests/slurm/slurm.sh: slurm-wlm, munge, slurmdbd on MariaDB), through
the ``cnnlab`` console script a user runs: submission, presets that fit a CPU partition, one-line errors,
killed and requeued jobs, and the sweep summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env

SLURM_SCRIPT = Path(__file__).parent / "slurm" / "slurm.sh"
CNNLAB = Path(sys.executable).parent / "cnnlab"
SMOKE = ["debug=smoke", "hydra.launcher.partition=debug"]

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def slurm() -> None:
    """A running SLURM: the one .ci/run started (tests/slurm/slurm.sh start), else one started here and
    stopped at the end; skipped, with the reason, where SLURM cannot be installed or started."""
    if shutil.which("sinfo") and subprocess.run([SLURM_SCRIPT, "status"]).returncode == 0:
        yield
        return
    started = subprocess.run([SLURM_SCRIPT, "start"], capture_output=True, text=True)
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no SLURM to test on: tests/slurm/slurm.sh start failed: {reason}")
    yield
    subprocess.run([SLURM_SCRIPT, "stop"], check=False)


def cnnlab(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The console script, as a user on the cluster's login node runs it."""
    return subprocess.run([str(CNNLAB), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def start_cnnlab(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CNNLAB), *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def sweep_dir(cwd: Path) -> Path:
    (found,) = (cwd / "outputs" / "multirun").glob("*/*")
    return found


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def job_stderr(sweep: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((sweep / ".submitit").rglob("*.err")))


def wait_until(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_readme_sweep_on_cpu_partition(slurm, tmp_path):
    """README's command on a CPU-only partition: two jobs run and the summary lists both, completed; the
    jobs' stderr holds no warning of Hydra's search path or submitit's signal bypass."""
    result = cnnlab(tmp_path, "-m", "hydra/launcher=slurm", *SMOKE, "optim.lr=1e-2,1e-3")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    assert [results(sweep / n)["status"] for n in ("0", "1")] == ["completed", "completed"]
    summary = (sweep / "summary.md").read_text()
    assert "2 completed, 0 not" in summary
    stderr = job_stderr(sweep)
    assert "searchpath" not in stderr and "Bypassing signal" not in stderr, stderr[-2000:]


def test_sbatch_error_is_one_line(slurm, tmp_path):
    """A request sbatch refuses (a GPU on a CPU partition): one line naming what sbatch said, no traceback."""
    result = cnnlab(tmp_path, "-m", "hydra/launcher=slurm_gpu", *SMOKE, "optim.lr=1e-2,1e-3")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("cnnlab: error: sbatch refused the sweep: sbatch: error:"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_unstartable_jobs_are_one_line_error(slurm, tmp_path):
    """Jobs that can never start (more CPUs than the partition's node has, pending PartitionConfig) end the
    sweep with one line naming the overrides to change, and are cancelled, instead of a wait forever."""
    cpus = os.cpu_count() or 1
    result = cnnlab(
        tmp_path, "-m", "hydra/launcher=slurm", *SMOKE, f"hydra.launcher.cpus_per_task={cpus + 1}", "seed=1,2"
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnlab: error: SLURM cannot start the sweep's jobs"), result.stderr[-2000:]
    assert "hydra.launcher.cpus_per_task" in last
    queue = subprocess.run(["squeue", "-h", "-u", "root", "-o", "%j"], capture_output=True, text=True).stdout
    assert "cnnlab" not in queue
