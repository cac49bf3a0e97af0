"""Faults a long run or a sweep meets, each through the real CLI: mistakes typed on the command line,
kills, Ctrl-C, diverging losses, foreign checkpoints."""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli_env, read_results, run_dirs, start_cli, wait_for_file

from cnnlab.training.interrupts import requeued_checkpoint

FAST = ["debug=fast", "callbacks.progress_bar=null"]
CNNLAB = Path(sys.executable).parent / "cnnlab"  # the console script a user runs


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lr=-0.1"], "optim.lr=-0.1 is invalid: expected a learning rate > 0"),
        (["data.batch_size=0"], "data.batch_size=0 is invalid: expected an integer >= 1"),
        (
            ["data=imagefolder", "data.root=missing", "data.num_folds=5", "data.fold=7"],
            "data.fold=7 is out of range: expected 0..4",
        ),
        (["freeze=top_k", "freeze.trainable=5000"], "freeze.trainable=5000 is out of range"),
        (["activation=hard_elu", "activation.alpha=abc"], "activation.alpha='abc' has the wrong type: expected float"),
        (["model=cnn_baseline_s4", "data.img_size=8"], "data.img_size=8 is too small for model="),
        (["+model.net.depth=3"], "model.net.depth is not an option of"),
        (["+model.depth=3"], "model.depth is not a model option: the network's own arguments go under model.net"),
        (["trainer.precision=bf32"], "trainer.precision='bf32' is invalid: expected one of auto, "),
        (
            ["data.augment.padding_mode=mirror"],
            "data.augment.padding_mode='mirror' is invalid: expected one of zeros, border, reflection",
        ),
        (["data.augment.degrees=abc"], "data.augment.degrees='abc' has the wrong type: expected float"),
        (["data.eval_batch_size=abc"], "data.eval_batch_size='abc' has the wrong type: expected int or null"),
        (["seed=-1"], "seed=-1 is invalid: expected an integer in 0..4294967295"),
    ],
    ids=[
        "lr",
        "batch_size",
        "fold",
        "freeze",
        "alpha_type",
        "img_size",
        "unknown_key",
        "misplaced_key",
        "precision",
        "augment_choice",
        "augment_type",
        "datamodule_base_key",
        "seed",
    ],
)
def test_config_mistake_stops_before_data_with_one_line(cnnlab, overrides, expected):
    result = cnnlab(*FAST, *overrides, check=False)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("cnnlab: error: ") and expected in last_line, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (run,) = run_dirs(cnnlab.cwd)
    results = read_results(run)
    assert results["status"] == "failed" and expected in results["error"]
    assert not (run / "data").exists()  # stopped before any data was loaded


def test_run_dir_that_is_a_file_is_refused_with_one_line(cnnlab):
    (cnnlab.cwd / "notes.txt").write_text("not a directory")
    for override in ("hydra.run.dir=notes.txt", "hydra.run.dir=notes.txt/run"):
        result = subprocess.run(
            [CNNLAB, *FAST, override], cwd=cnnlab.cwd, env=cli_env(), capture_output=True, text=True
        )
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"cnnlab: error: {override} cannot be created: notes.txt is a file, not a directory. "
            "Choose another hydra.run.dir=..."
        ]
    assert (cnnlab.cwd / "notes.txt").read_text() == "not a directory"


RESUMABLE = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.max_epochs=3", "seed=3"]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def _val_losses(run: Path) -> list[tuple[int, float]]:
    """(epoch, val/loss) of each validation row of metrics.csv, in file order."""
    return [(int(row["epoch"]), float(row["val/loss"])) for row in _rows(run) if row["val/loss"]]


def _test_rows(run: Path) -> list[int]:
    """Positions of metrics.csv rows holding test metrics: the test step's row, then the report's (AUROC)."""
    return [i for i, row in enumerate(_rows(run)) if any(v for k, v in row.items() if k.startswith("test/"))]


def _epoch(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]


def test_last_checkpoint_is_the_latest_epoch_and_resumes_after_it(cnnlab):
    """In this tiny MobileNetV3 run val/loss is lowest after the first epoch and rises after: best.ckpt keeps that
    epoch, last.ckpt must be the final one (Lightning's save_last alone would leave it at the best)."""
    args = [
        *FAST,
        "model=mobilenetv3_small",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=3",
        "hydra.run.dir=outputs/run",
    ]
    cnnlab(*args)
    run = cnnlab.cwd / "outputs/run"
    losses = _val_losses(run)
    assert [epoch for epoch, _ in losses] == [0, 1, 2]
    best_epoch = min(losses, key=lambda pair: pair[1])[0]
    assert best_epoch != 2, f"val/loss should rise in the last epoch for this test to tell best from last: {losses}"
    assert _epoch(run / "checkpoints/last.ckpt") == 2
    assert _epoch(run / "checkpoints/best.ckpt") == best_epoch == read_results(run)["best_epoch"]

    cnnlab(*args, "trainer.max_epochs=4", "ckpt_path=last")
    resumed = read_results(run)
    assert resumed["status"] == "completed" and resumed["epochs_run"] == 4
    assert _val_losses(run)[:3] == losses  # epochs 0-2 kept once, not replayed
    assert [epoch for epoch, _ in _val_losses(run)] == [0, 1, 2, 3]
    last = len(_rows(run)) - 1
    assert _test_rows(run) == [last - 1, last]  # the first run's test rows are gone; the new ones are last
    assert _epoch(run / "checkpoints/last.ckpt") == 3


def test_killed_run_resumes_to_the_same_result(cnnlab):
    cnnlab(*RESUMABLE, "hydra.run.dir=outputs/uninterrupted")
    expected = read_results(cnnlab.cwd / "outputs/uninterrupted")

    process = start_cli([*RESUMABLE, "hydra.run.dir=outputs/killed"], cnnlab.cwd)
    wait_for_file("outputs/killed/checkpoints/last.ckpt", cnnlab.cwd, process)
    process.send_signal(signal.SIGKILL)  # mid-way through the second epoch
    process.wait()
    assert read_results(cnnlab.cwd / "outputs/killed")["status"] != "completed"

    cnnlab(*RESUMABLE, "hydra.run.dir=outputs/killed", "ckpt_path=last")
    resumed = read_results(cnnlab.cwd / "outputs/killed")
    assert resumed["status"] == "completed"
    for key in ("test/acc", "test/loss", "val/acc_best", "best_epoch", "epochs_run"):
        assert resumed[key] == expected[key], key
    # the killed run's rows of its unfinished epoch are replaced by the resumed run's: the same curves
    assert _rows(cnnlab.cwd / "outputs/killed") == _rows(cnnlab.cwd / "outputs/uninterrupted")


def test_sigterm_saves_a_checkpoint_records_the_signal_and_resumes(cnnlab):
    """What SLURM and most schedulers send first: the run stops cleanly, with 128 + 15 as a shell reports it."""
    args = [*RESUMABLE, "trainer.limit_train_batches=10", "hydra.run.dir=outputs/term"]
    process = start_cli([*args, "trainer.max_epochs=50"], cnnlab.cwd, command=(str(CNNLAB),))
    wait_for_file("outputs/term/checkpoints/last.ckpt", cnnlab.cwd, process)  # the second epoch is under way
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=600) == 128 + signal.SIGTERM, process.stderr.read()[-5000:]
    message = process.stderr.read().strip().splitlines()[-1]
    assert message.startswith("cnnlab: interrupted by SIGTERM") and "ckpt_path=last" in message
    run = cnnlab.cwd / "outputs/term"
    results = read_results(run)
    assert results["status"] == "interrupted" and "SIGTERM" in results["error"]
    interrupted = run / "checkpoints/interrupted.ckpt"
    assert _epoch(interrupted) >= 1

    cnnlab(*args, f"ckpt_path={interrupted}")
    resumed = read_results(run)
    assert resumed["status"] == "completed" and resumed["epochs_run"] == 3
    assert resumed["train_time_sec"] > results["wall_time_sec"]  # the times of both starts, summed
    assert [epoch for epoch, _ in _val_losses(run)] == [0, 1, 2]
    assert _test_rows(run) == [len(_rows(run)) - 2, len(_rows(run)) - 1]


def test_ctrl_c_saves_a_checkpoint_and_marks_the_run(cnnlab):
    process = start_cli([*RESUMABLE, "trainer.max_epochs=50", "hydra.run.dir=outputs/stopped"], cnnlab.cwd)
    wait_for_file("outputs/stopped/checkpoints/last.ckpt", cnnlab.cwd, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=600) == 128 + signal.SIGINT, process.stderr.read()[-5000:]
    run = cnnlab.cwd / "outputs/stopped"
    assert (run / "checkpoints/interrupted.ckpt").is_file()
    results = read_results(run)
    assert results["status"] == "interrupted" and "SIGINT" in results["error"]
    assert (run / "report/learning_curves.png").is_file()


def test_diverging_loss_stops_with_a_hint(cnnlab):
    result = cnnlab(*FAST, "optim=sgd", "optim.lr=1e12", "trainer.limit_train_batches=20", check=False)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "the training loss became" in message and "at epoch 0, step" in message
    assert "optim.lr" in message
    (run,) = run_dirs(cnnlab.cwd)
    assert read_results(run)["status"] == "failed"
    for checkpoint in (run / "checkpoints").glob("*.ckpt"):
        weights = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_checkpoint_of_another_network_is_refused(cnnlab):
    cnnlab(*FAST, "model=mobilenetv3_small", "hydra.run.dir=outputs/small")
    result = cnnlab(*FAST, "model=mobilenetv3_large", "ckpt_path=outputs/small/checkpoints/last.ckpt", check=False)
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "trained with a different network" in message
    assert "'mode': 'small'" in message and "'mode': 'large'" in message


def test_untrusted_pickle_needs_opt_in(cnnlab):
    path = cnnlab.cwd / "foreign.ckpt"
    torch.save({"state_dict": {}, "extra": argparse.Namespace(x=1)}, path)
    result = cnnlab(*FAST, f"ckpt_path={path}", check=False)
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "trust_checkpoint=true" in message


def test_runs_started_together_get_their_own_dirs(cnnlab):
    processes = [start_cli(FAST, cnnlab.cwd) for _ in range(2)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    runs = run_dirs(cnnlab.cwd)
    assert len(runs) == 2 and runs[0] != runs[1]
    assert all(read_results(r)["status"] == "completed" for r in runs)


def test_results_record_versions_and_commit(cnnlab):
    cnnlab(*FAST)
    (run,) = run_dirs(cnnlab.cwd)
    environment = read_results(run)["environment"]
    assert environment["packages"]["torch"] == torch.__version__.split("+")[0]
    assert "cnnlab_git_commit" in environment
    assert (run / ".hydra/config.yaml").is_file()


def test_resumed_run_continues_its_wandb_run(cnnlab_logged_out):
    cnnlab = cnnlab_logged_out  # no W&B login: both processes log offline
    cnnlab(*FAST, "logger=wandb", "hydra.run.dir=outputs/logged")
    cnnlab(*FAST, "logger=wandb", "hydra.run.dir=outputs/logged", "ckpt_path=last", "trainer.max_epochs=2")
    run = cnnlab.cwd / "outputs/logged"
    offline_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2  # one per process
    run_ids = {path.name.rsplit("-", 1)[-1] for path in offline_runs}
    assert run_ids == {(run / "wandb_run_id.txt").read_text().strip()}
    assert read_results(run)["epochs_run"] == 2


def test_resumed_run_continues_its_mlflow_run(cnnlab):
    from mlflow.tracking import MlflowClient

    cnnlab(*FAST, "logger=mlflow", "hydra.run.dir=outputs/logged")
    cnnlab(*FAST, "logger=mlflow", "hydra.run.dir=outputs/logged", "ckpt_path=last", "trainer.max_epochs=2")
    client = MlflowClient(f"sqlite:///{cnnlab.cwd / 'outputs/mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id])
    assert run.info.status == "FINISHED"
    # epoch 1 from the first process, epoch 2 from the resumed one, in one run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [1, 3]
    # MLflow keeps the first value of a param; what the resumed process changed is a tag
    assert run.data.params["trainer/max_epochs"] == "1" and run.data.tags["resumed/trainer/max_epochs"] == "2"
    assert read_results(cnnlab.cwd / "outputs/logged")["epochs_run"] == 2
    # a run deleted in MLflow meanwhile: the next resume starts a new one instead of failing
    client.delete_run(run.info.run_id)
    cnnlab(*FAST, "logger=mlflow", "hydra.run.dir=outputs/logged", "ckpt_path=last", "trainer.max_epochs=3")
    (new_run,) = client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id])
    assert new_run.info.run_id != run.info.run_id


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 46 MB file system: room for this run's first two checkpoints (18.5 MB each) and its small files,
    not for a third. Needs root to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=46m", "tmpfs", disk]).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield disk
    subprocess.run(["umount", disk], check=True)


def test_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_previous(cnnlab, small_disk):
    run = small_disk / "run"
    result = cnnlab(
        *FAST,
        "model=mobilenetv3_small",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=3",
        f"hydra.run.dir={run}",
        check=False,
    )
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("cnnlab: error: no space left on device while saving checkpoint "), result.stderr[-3000:]
    assert str(run / "checkpoints") in message and "is intact" in message
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    assert _epoch(run / "checkpoints/last.ckpt") == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no partial file
    assert read_results(run)["status"] == "failed"


def test_requeued_slurm_job_finds_its_checkpoint(tmp_path, monkeypatch):
    """SLURM's variables as a requeued job sees them: it resumes from the newer of last.ckpt (the end of its
    newest finished epoch) and interrupted.ckpt (where the requeue's SIGTERM stopped it), both exact, never
    from a mid-epoch hpc_ckpt_<n> (an older cnnlab's or Lightning's)."""
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "cnnlab")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/last.ckpt").write_bytes(b"")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert requeued_checkpoint(tmp_path) is None  # the first start: from scratch
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_checkpoint(tmp_path) == str(tmp_path / "checkpoints/last.ckpt")  # preempted
    for n in (2, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"")
    assert requeued_checkpoint(tmp_path) == str(tmp_path / "checkpoints/last.ckpt")  # even beside hpc ones
    (tmp_path / "checkpoints/interrupted.ckpt").write_bytes(b"")
    os.utime(tmp_path / "checkpoints/last.ckpt", ns=(1, 1))
    assert requeued_checkpoint(tmp_path) == str(tmp_path / "checkpoints/interrupted.ckpt")  # the newer
    os.utime(tmp_path / "checkpoints/interrupted.ckpt", ns=(0, 0))
    assert requeued_checkpoint(tmp_path) == str(tmp_path / "checkpoints/last.ckpt")  # a stale interrupted.ckpt
    monkeypatch.delenv("SLURM_NTASKS")
    assert requeued_checkpoint(tmp_path) is None  # not on SLURM
