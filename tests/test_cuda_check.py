"""skip_unloadable_nvml_check: without NVML, torch's optimizer steps stop trying to load it, and
``torch.cuda.is_available()`` answers as before."""

from __future__ import annotations

import ctypes
import os

import pytest
import torch

from cnnlab.training.cuda_check import NVML_CHECK_VARIABLE, NVML_LIBRARY, skip_unloadable_nvml_check


@pytest.fixture
def nvml_loads(monkeypatch) -> list[str]:
    """Records every library ctypes is asked to load; NVML's load fails, as on a machine without the driver."""
    real_cdll, loads = ctypes.CDLL, []

    def cdll(name, *args, **kwargs):
        loads.append(name)
        if name == NVML_LIBRARY:
            raise OSError(f"{name}: cannot open shared object file")
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    return loads


def adam_step() -> None:
    parameter = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.Adam([parameter], fused=True)
    parameter.grad = torch.ones(4)
    optimizer.step()


def test_without_nvml_the_variable_goes_and_adam_stops_probing(monkeypatch, nvml_loads):
    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    available = torch.cuda.is_available()
    if torch.backends.cuda.is_built():  # a CPU-only torch never probes
        adam_step()
        assert nvml_loads.count(NVML_LIBRARY) >= 1
    assert skip_unloadable_nvml_check() is True
    assert NVML_CHECK_VARIABLE not in os.environ
    nvml_loads.clear()
    adam_step()
    assert NVML_LIBRARY not in nvml_loads
    assert torch.cuda.is_available() == available


def test_a_loadable_nvml_keeps_the_check(monkeypatch):
    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    monkeypatch.setattr(ctypes, "CDLL", lambda name, *args, **kwargs: object())
    assert skip_unloadable_nvml_check() is False
    assert os.environ[NVML_CHECK_VARIABLE] == "1"


@pytest.mark.parametrize("value", [None, "0"])
def test_an_unrequested_check_is_left_alone(monkeypatch, nvml_loads, value):
    if value is None:
        monkeypatch.delenv(NVML_CHECK_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(NVML_CHECK_VARIABLE, value)
    assert skip_unloadable_nvml_check() is False
    assert os.environ.get(NVML_CHECK_VARIABLE) == value
    assert nvml_loads == []
