"""Faults a long run or a sweep meets, each through the real CLI: mistakes typed on the command line,
kills, Ctrl-C, diverging losses, foreign checkpoints."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import cli_env, read_results, run_dirs

FAST = ["debug=fast", "callbacks.progress_bar=null"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lr=-0.1"], "optim.lr=-0.1 is invalid: expected a learning rate > 0"),
        (["data.batch_size=0"], "data.batch_size=0 is invalid: expected an integer >= 1"),
        (["data=imagefolder", "data.root=missing", "data.num_folds=5", "data.fold=7"], "data.fold=7 is out of range: expected 0..4"),
        (["freeze=top_k", "freeze.trainable=5000"], "freeze.trainable=5000 is out of range"),
        (["activation=hard_elu", "activation.alpha=abc"], "activation.alpha='abc' has the wrong type: expected float"),
        (["model=cnn_baseline_s4", "data.img_size=8"], "data.img_size=8 is too small for model="),
        (["+model.net.depth=3"], "model.net.depth is not an option of"),
        (["+model.depth=3"], "model.depth is not a model option: the network's own arguments go under model.net"),
        (["trainer.precision=bf32"], "trainer.precision='bf32' is invalid: expected one of auto, "),
        (["data.augment.padding_mode=mirror"], "data.augment.padding_mode='mirror' is invalid: expected one of zeros, border, reflection"),
        (["data.augment.degrees=abc"], "data.augment.degrees='abc' has the wrong type: expected float"),
        (["data.eval_batch_size=abc"], "data.eval_batch_size='abc' has the wrong type: expected int or null"),
    ],
    ids=["lr", "batch_size", "fold", "freeze", "alpha_type", "img_size", "unknown_key", "misplaced_key", "precision", "augment_choice",
         "augment_type", "datamodule_base_key"],
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


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", *args], cwd=cwd, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(path_glob: str, cwd: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(cwd.glob(path_glob))
        if found:
            return found[0]
        if process.poll() is not None:
            pytest.fail(f"run ended before {path_glob} appeared: {process.stderr.read()[-3000:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"{path_glob} did not appear in {timeout} s")


RESUMABLE = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.max_epochs=3", "seed=3"]


def test_killed_run_resumes_to_the_same_result(cnnlab):
    cnnlab(*RESUMABLE, "hydra.run.dir=outputs/uninterrupted")
    expected = read_results(cnnlab.cwd / "outputs/uninterrupted")

    process = _start([*RESUMABLE, "hydra.run.dir=outputs/killed"], cnnlab.cwd)
    _wait_for("outputs/killed/checkpoints/last.ckpt", cnnlab.cwd, process)
    process.send_signal(signal.SIGKILL)  # mid-way through the second epoch
    process.wait()
    assert read_results(cnnlab.cwd / "outputs/killed")["status"] != "completed"

    cnnlab(*RESUMABLE, "hydra.run.dir=outputs/killed", "ckpt_path=last")
    resumed = read_results(cnnlab.cwd / "outputs/killed")
    assert resumed["status"] == "completed"
    for key in ("test/acc", "test/loss", "val/acc_best", "best_epoch", "epochs_run"):
        assert resumed[key] == expected[key], key


def test_ctrl_c_saves_a_checkpoint_and_marks_the_run(cnnlab):
    process = _start([*RESUMABLE, "trainer.max_epochs=50", "hydra.run.dir=outputs/stopped"], cnnlab.cwd)
    _wait_for("outputs/stopped/checkpoints/last.ckpt", cnnlab.cwd, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=600) != 0
    run = cnnlab.cwd / "outputs/stopped"
    assert (run / "checkpoints/interrupted.ckpt").is_file(), process.stderr.read()[-3000:]
    assert read_results(run)["status"] == "interrupted"
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
    cnnlab(*FAST, "hydra.run.dir=outputs/small")
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
    processes = [_start(FAST, cnnlab.cwd) for _ in range(2)]
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
