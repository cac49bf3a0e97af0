"""Shared test helpers: run the real CLI in a subprocess and find what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
