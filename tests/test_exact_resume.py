"""A run stopped by SIGTERM or Ctrl-C anywhere in an epoch (after its first batch, after its last, in its
validation, after its last validation batch, mid-way through a later epoch) and resumed each time with
``ckpt_path=last`` (its newest checkpoint: ``interrupted.ckpt``, newer than ``last.ckpt``) ends exactly as an
uninterrupted run of the same seed: the same metrics.csv, bit-equal final weights, the same test metrics.
Through the real ``cnnlab`` console script; the test's own callback (tests/signal_at.py) sends the signal
after an exact batch."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import torch
from conftest import cli_env, read_results

CNNLAB = Path(sys.executable).parent / "cnnlab"
TESTS = Path(__file__).parent
# digits: 1,257 training images in 10 batches of 128 an epoch, 269 validation images in 5 batches of 64
RUN = [
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "data.batch_size=128",
    "data.eval_batch_size=64",
    "seed=3",
]
# (signal, stage, epoch, batch after which the signal arrives; 0-based), in the order the run meets them
STOPS = [
    ("SIGTERM", "train", 0, 0),
    ("SIGINT", "train", 0, 9),
    ("SIGTERM", "val", 0, 4),
    ("SIGINT", "train", 1, 6),
    ("SIGTERM", "val", 1, 2),
]
# where interrupted.ckpt says each stopped: (epochs finished, training batches done in the epoch, validation
# batches done in it). After the last training batch the run stops in the validation that follows (Lightning
# stops a validation after its current batch), which the resumed run runs again from its start; after the
# last validation batch, at the epoch's end.
POSITIONS = [(0, 1, 0), (0, 10, 0), (1, 10, 5), (1, 7, 0), (1, 10, 0)]


def _cnnlab(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = cli_env(PYTHONPATH=str(TESTS), OMP_NUM_THREADS="1")  # one thread: the same float sums in every start
    return subprocess.run([CNNLAB, *RUN, *args], cwd=cwd, env=env, capture_output=True, text=True)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def _position(checkpoint: Path) -> tuple[int, int, int]:
    loops = torch.load(checkpoint, map_location="cpu", weights_only=True)["loops"]["fit_loop"]
    return (
        loops["epoch_progress"]["current"]["completed"],
        loops["epoch_loop.batch_progress"]["current"]["completed"],
        loops["epoch_loop.val_loop.batch_progress"]["total"]["completed"],
    )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_a_stop_anywhere_in_an_epoch_resumes_exactly(tmp_path):
    expected = tmp_path / "outputs/uninterrupted"
    assert _cnnlab(tmp_path, f"hydra.run.dir={expected}").returncode == 0

    run = tmp_path / "outputs/stopped"
    resume = "ckpt_path=last"
    for i, (name, stage, epoch, batch) in enumerate(STOPS):
        stop = [
            "+callbacks.signal_at._target_=signal_at.SignalAt",
            f"+callbacks.signal_at.name={name}",
            f"+callbacks.signal_at.stage={stage}",
            f"+callbacks.signal_at.epoch={epoch}",
            f"+callbacks.signal_at.batch={batch}",
        ]
        result = _cnnlab(tmp_path, f"hydra.run.dir={run}", *stop, *([resume] if i else []))
        assert result.returncode == 128 + signal.Signals[name], result.stderr[-3000:]
        assert result.stderr.strip().splitlines()[-1] == (
            f"cnnlab: interrupted by {name}; resume exactly where it stopped (checkpoints/interrupted.ckpt) "
            f"with ckpt_path=last hydra.run.dir={run}"
        )
        assert _position(run / "checkpoints/interrupted.ckpt") == POSITIONS[i]
        assert read_results(run)["status"] == "interrupted"
    result = _cnnlab(tmp_path, f"hydra.run.dir={run}", resume)
    assert result.returncode == 0, result.stderr[-3000:]

    resumed = read_results(run)
    assert resumed["status"] == "completed"
    assert _rows(run) == _rows(expected)
    weights, expected_weights = _weights(run), _weights(expected)
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[key], expected_weights[key]) for key in weights)
    for key in ("test/acc", "test/loss", "test/f1_macro", "val/acc_best", "best_epoch", "epochs_run"):
        assert resumed[key] == read_results(expected)[key], key
