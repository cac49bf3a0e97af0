"""torch's intra-op threads: each cnnlab process takes its share of the cores."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import logged_out_env, run_console_script

from cnnlab.training.threads import local_processes, set_intra_op_threads, set_openmp_wait_policy, usable_cores


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_local_processes_count_sweep_jobs_and_cpu_ranks(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_processes(1, {"accelerator": "cpu", "devices": 1}) == 1
    assert local_processes(2, {"accelerator": "cpu", "devices": 3}) == 6
    assert local_processes(2, {"accelerator": "cpu", "devices": "auto"}) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun
    assert local_processes(1, {"accelerator": "cpu", "devices": 1}) == 4


@pytest.mark.parametrize(
    ("processes", "load", "preset", "expected"),
    [
        (1, 0.0, None, None),  # alone on idle cores: OpenMP's default, PASSIVE would cost 15-25%
        (2, 0.0, None, "PASSIVE"),  # two cnnlab processes started together share the cores
        (1, 64.0, None, "PASSIVE"),  # others keep every core busy
        (2, 64.0, "ACTIVE", "ACTIVE"),  # the user's setting wins
    ],
)
def test_waiting_threads_sleep_only_when_the_cores_are_shared(monkeypatch, processes, load, preset, expected):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if preset:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    monkeypatch.setattr("os.getloadavg", lambda: (load, load, load))
    assert set_openmp_wait_policy(processes) == expected
    assert os.environ.get("OMP_WAIT_POLICY") == expected


def test_threads_are_the_cores_share_unless_set(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = usable_cores()
    assert set_intra_op_threads(None, 2)[0] == max(1, cores // 2) == torch.get_num_threads()
    assert set_intra_op_threads(None, 4 * cores)[0] == 1
    assert set_intra_op_threads(3, 2) == (3, "threads=")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert set_intra_op_threads(None, 1) == (1, "OMP_NUM_THREADS")


def test_cli_logs_its_threads(tmp_path):
    env = logged_out_env(tmp_path / "home")
    env.pop("OMP_NUM_THREADS", None)
    result = run_console_script("cnnlab", ["debug=smoke", "test=false"], tmp_path, env)
    expected = f"torch intra-op threads: {usable_cores()} ({usable_cores()} cores / 1 cnnlab process on this machine"
    assert expected in result.stdout + result.stderr
    result = run_console_script("cnnlab", ["debug=smoke", "test=false", "threads=1"], tmp_path, env)
    assert "torch intra-op threads: 1 (threads=" in result.stdout + result.stderr
