"""Sweeps on a real single-node SLURM (tests/slurm/slurm.sh: slurm-wlm, munge, slurmdbd on MariaDB), through
the ``cnnlab`` console script a user runs: submission, presets that fit a CPU partition, one-line errors,
killed and requeued jobs, and the sweep summary."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
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


@pytest.fixture(autouse=True)
def cancel_leftovers():
    """Cancel the jobs a failed test left in the queue, so the next test has the node to itself."""
    yield
    if shutil.which("scancel"):
        subprocess.run(["scancel", "--name=cli", f"--user={getpass.getuser()}"], check=False)


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


TRAIN = ["trainer.max_epochs=6", "trainer.limit_train_batches=12", "hydra.launcher.cpus_per_task=1"]


def saved_epoch(checkpoint: Path) -> int | None:
    """The epoch a checkpoint holds, None while it is missing or half-written."""
    import torch

    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
    except Exception:
        return None


def job_id(sweep: Path, job: int) -> str:
    """SLURM's id of sweep job ``job`` (``<array id>_<job>``), from submitit's folder."""
    (found,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.endswith(f"_{job}")]
    return found


def kill_training(slurm_id: str) -> None:
    """SIGKILL to the job's Python process (submitit's runner, which runs the training)."""
    numeric = subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%A"], capture_output=True, text=True).stdout
    listed = subprocess.run(["scontrol", "listpids", numeric.strip()], capture_output=True, text=True).stdout
    for pid in (int(line.split()[0]) for line in listed.splitlines()[1:] if line.split()[0].isdigit()):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
        if b"submitit.core._submit" in cmdline:
            os.kill(pid, signal.SIGKILL)
            return
    pytest.fail(f"no training process of job {slurm_id} in {listed}")


def job_state(slurm_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def restart_now(slurm_id: str) -> None:
    """Let a requeued job start again at once: SLURM holds one back for 120 s (reason BeginTime)."""
    wait_until(lambda: job_state(slurm_id) == "PENDING", 120, f"job {slurm_id} requeued")
    subprocess.run(["scontrol", "update", f"jobid={slurm_id}", "StartTime=now"], check=True)


def weights(checkpoint: Path) -> dict:
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_requeues_resume_exactly(slurm, tmp_path):
    """Job 0 of two identical jobs gets the time-limit signal (SIGUSR1) after its first epoch and is then
    requeued by hand (scontrol requeue) later: it resumes by itself each time from its newest epoch, and ends
    with the same metrics.csv, bit-equal weights and the same test metrics as job 1, never stopped; both
    count as completed only once finished, and the requeued job's stderr says it resumes by itself. A stale
    hpc_ckpt_1.ckpt in the run dir is neither resumed from nor tested."""
    master = start_cnnlab(tmp_path, "-m", "hydra/launcher=slurm", *SMOKE, *TRAIN, "seed=3,3")
    wait_until(lambda: list((tmp_path / "outputs").rglob("0/checkpoints/last.ckpt")), what="job 0's first epoch")
    sweep = sweep_dir(tmp_path)
    run, slurm_id = sweep / "0", job_id(sweep, 0)
    subprocess.run(["scancel", "--signal=USR1", slurm_id], check=True)
    restart_now(slurm_id)
    first_stop = saved_epoch(run / "checkpoints/last.ckpt")
    # what Lightning's own requeue used to leave: a stale hpc checkpoint, which must neither be resumed nor tested
    shutil.copy(run / "checkpoints/last.ckpt", run / "hpc_ckpt_1.ckpt")
    wait_until(lambda: (saved_epoch(run / "checkpoints/last.ckpt") or 0) > (first_stop or 0) + 1, 300, "the resume")
    subprocess.run(["scontrol", "requeue", slurm_id], check=True)
    restart_now(slurm_id)
    out, err = master.communicate(timeout=600)
    assert master.returncode == 0, err[-3000:]
    assert "2 completed, 0 not" in (sweep / "summary.md").read_text()
    reference = sweep / "1"
    assert (run / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    ours, theirs = weights(run / "checkpoints/last.ckpt"), weights(reference / "checkpoints/last.ckpt")
    assert ours.keys() == theirs.keys() and all(torch_equal(ours[k], theirs[k]) for k in ours)
    tested = ("tested_epoch", "test/acc", "test/loss", "epochs_run")
    assert {k: results(run)[k] for k in tested} == {k: results(reference)[k] for k in tested}
    assert [p.name for p in run.glob("hpc_ckpt_*.ckpt")] == ["hpc_ckpt_1.ckpt"]  # none written, the stale one unused
    stderr = job_stderr(sweep)
    assert "SLURM requeued the job: it resumes from" in stderr, stderr[-3000:]
    assert "resume exactly from the last finished epoch with ckpt_path=last" not in stderr


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_job_killed_without_requeue_is_recorded(slurm, tmp_path):
    """A job stopped by SIGTERM that SLURM does not requeue, and one whose run was killed outright (SIGKILL,
    as by the OOM killer): the sweep goes on and its summary lists both (interrupted, lost) with their run
    dirs, beside the completed one."""
    # jobs 0 and 1 cannot end before they are stopped (no early stopping, 1000 epochs: with 40 epochs and
    # early stopping on, a loaded machine let job 1 write "completed" before the kill); job 2 is short
    epochs = ["trainer.max_epochs=1000,1000,3", "callbacks.early_stopping.patience=1000"]
    master = start_cnnlab(tmp_path, "-m", "hydra/launcher=slurm", *SMOKE, *TRAIN[1:], *epochs)
    wait_until(lambda: list((tmp_path / "outputs").rglob("0/checkpoints/last.ckpt")), what="job 0")
    sweep = sweep_dir(tmp_path)
    subprocess.run(["scancel", "--signal=TERM", job_id(sweep, 0)])  # exits non-zero, though it signals
    wait_until(lambda: list((tmp_path / "outputs").rglob("1/checkpoints/last.ckpt")), what="job 1")
    kill_training(job_id(sweep, 1))  # as the OOM killer does
    out, err = master.communicate(timeout=600)
    assert master.returncode == 0, err[-3000:]
    assert "UncompletedJobError" not in err
    assert [results(sweep / n)["status"] for n in "012"] == ["interrupted", "lost", "completed"]
    summary = (sweep / "summary.md").read_text()
    assert "1 completed, 2 not" in summary
    for run, epochs, status in (("0", 1000, "interrupted"), ("1", 1000, "lost"), ("2", 3, "completed")):
        assert f"| {run} | {epochs} | {status} |" in summary  # run dir, trainer.max_epochs, status


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "debug=smoke"]


def test_ddp_under_srun_writes_one_run_dir(slurm, tmp_path):
    """`srun` starts both ranks of a DDP run itself, each resolving the time-stamped run dir: they share
    rank 0's, which holds the completed run of world size 2."""
    command = ["srun", "--ntasks-per-node=2", "--cpus-per-task=1", str(CNNLAB), *DDP]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = [p.parent for p in (tmp_path / "outputs").rglob("results.json")]
    assert [p for p in run.parent.iterdir() if p.is_dir()] == [run]
    assert (results(run)["status"], results(run)["world_size"]) == ("completed", 2)


def test_ddp_sweep_job_with_two_tasks(slurm, tmp_path):
    """A sweep job of two SLURM tasks (hydra.launcher.tasks_per_node=2) is one DDP run in one run dir."""
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.tasks_per_node=2"]
    result = cnnlab(tmp_path, "-m", *launcher, "hydra.launcher.cpus_per_task=1", *DDP, "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    assert (results(sweep / "0")["status"], results(sweep / "0")["world_size"]) == ("completed", 2)


def test_torchrun_ranks_share_rank_zeros_run_dir(tmp_path, monkeypatch):
    """torchrun's ranks resolve the run dir each, maybe in another second: rank 1 gets rank 0's, not its own."""
    from cnnlab.run_dirs import unique_dir

    for name in ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29500")
    (tmp_path / "12-00-00").mkdir()  # an earlier run in the same second
    monkeypatch.setenv("RANK", "0")
    chosen = unique_dir(str(tmp_path / "12-00-00"))
    monkeypatch.setenv("RANK", "1")
    assert unique_dir(str(tmp_path / "12-00-01")) == chosen == str(tmp_path / "12-00-00-2")
    assert not (tmp_path / "12-00-01").exists()
    monkeypatch.setenv("MASTER_PORT", "29501")  # the next torchrun start: a new dir
    monkeypatch.setenv("RANK", "0")
    assert unique_dir(str(tmp_path / "12-00-00")) == str(tmp_path / "12-00-00-3")
