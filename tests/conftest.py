"""Shared test helpers: run the real CLI in a subprocess and find what it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Each test's decoded-image cache in a temporary folder of its own (the CLI inherits it), not in
    the user's ~/.cache/cnnlab."""
    path = tmp_path_factory.mktemp("cnnlab-cache")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(path))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: offline hubs, quiet logs, plus ``extra``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, module: str = "cnnlab.cli", check: bool = True, **env: str):
    """Run ``python -m <module> <args>`` in ``cwd``; fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(**env), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{module} {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def start_cli(
    args: list[str], cwd: Path, command: tuple[str, ...] = (sys.executable, "-m", "cnnlab.cli")
) -> subprocess.Popen:
    """Start ``cnnlab`` (by default ``python -m cnnlab.cli``) in ``cwd`` without waiting for it, to stop it midway."""
    return subprocess.Popen(
        [*command, *args],
        cwd=cwd,
        env=cli_env(),
        # Ctrl-C acts as in a terminal even when the tests run in a background job, whose SIGINT is ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path_glob: str, cwd: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    """The first file matching ``path_glob`` under ``cwd`` once it appears; fails the test if ``process`` ends first."""
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


def quiet_trainer(max_epochs: int, callbacks: list = (), **options):
    """A one-CPU Lightning Trainer for tests that fit a module directly: no logger, progress bar, summary,
    checkpoints or sanity check unless ``options`` say otherwise."""
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), **{**defaults, **options})


def logged_out_env(home: Path) -> dict[str, str]:
    """A user's environment built from scratch: the venv's console scripts on PATH and an empty HOME, so no
    W&B login (no ~/.netrc, no WANDB_* variable) and no logger setting (MLFLOW_*) of the machine's user.
    Only the test runner's thread count (the Makefile's OMP_NUM_THREADS) is passed on."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home)}
    if "OMP_NUM_THREADS" in os.environ:
        env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    return env


def run_console_script(script: str, args: list[str], cwd: Path, env: dict[str, str], check: bool = True):
    """Run the installed console script ``script`` (e.g. ``cnnlab``) in ``cwd`` with exactly ``env``."""
    result = subprocess.run([script, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(
            f"{script} {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


@pytest.fixture
def cnnlab_logged_out(tmp_path: Path):
    """Call the ``cnnlab`` console script in a temporary working directory as a user with no W&B login
    (:func:`logged_out_env`)."""
    env = logged_out_env(tmp_path / "home")

    def call(*args: str, check: bool = True):
        return run_console_script("cnnlab", list(args), tmp_path, env, check=check)

    call.cwd = tmp_path
    return call


def run_dirs(cwd: Path) -> list[Path]:
    """Run directories (those holding results.json) below ``cwd/outputs``, oldest first."""
    return sorted(p.parent for p in (cwd / "outputs").rglob("results.json"))


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture
def cnnlab(tmp_path: Path):
    """Call the real ``cnnlab`` CLI in a temporary working directory."""

    def call(*args: str, check: bool = True, **env: str):
        return run_cli(list(args), tmp_path, check=check, **env)

    call.cwd = tmp_path
    return call


def weights_off(net) -> list[str]:
    """The overrides that build a model config's ``net`` without ImageNet weights (no download, no weight file):
    timm models' ``pretrained``, the Keras twins' ``weights``."""
    return [f"model.net.{key}={value}" for key, value in (("pretrained", "false"), ("weights", "null")) if key in net]
