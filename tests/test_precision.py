"""``trainer.precision=auto``: the per-device, per-model choice and its record in results.json; the study
experiments' float32."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch
from conftest import read_results, run_dirs
from hydra import compose, initialize_config_module

from cnnlab.training import precision
from cnnlab.training.allocator import huge_pages_requested
from cnnlab.training.precision import choose_precision, cpu_supports_bf16, run_precision


def test_an_explicit_precision_is_kept():
    assert choose_precision("bf16-mixed", "cpu", bf16_on_cpu=False) == ("bf16-mixed", "set by trainer.precision")
    assert choose_precision(32, "gpu", bf16_on_cpu=True)[0] == "32"


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_on_cpu_uses_bf16_only_for_models_that_gain_and_cpus_that_have_it(monkeypatch, native_bf16):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native_bf16)
    assert choose_precision("auto", "cpu", bf16_on_cpu=False)[0] == "32-true"
    assert choose_precision("auto", "cpu", bf16_on_cpu=True)[0] == ("bf16-mixed" if native_bf16 else "32-true")


@pytest.mark.parametrize("gpu_bf16, expected", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_a_gpu_is_mixed_precision(monkeypatch, gpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: gpu_bf16)
    assert choose_precision("auto", "gpu", bf16_on_cpu=False)[0] == expected
    assert choose_precision("auto", "auto", bf16_on_cpu=True)[0] == expected


@pytest.mark.parametrize("model, gains", [("mobilenetv3_small", False), ("resnet50", True), ("resnet18_s2", True)])
def test_model_configs_say_whether_bf16_pays_on_cpu(model, gains):
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}"])
    assert cfg.trainer.precision == "auto" and cfg.model.bf16_on_cpu is gains
    assert run_precision(cfg)[0] == ("bf16-mixed" if gains and cpu_supports_bf16() else "32-true")  # trainer=cpu


EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_study_experiments_train_in_float32_on_any_device_unless_told(experiment):
    """The studies trained in float32 (their frameworks' default): not ``auto``'s bf16 on a GPU or a bf16 CPU."""
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
        faster = compose("train", overrides=[f"experiment={experiment}", "trainer.precision=bf16-mixed"])
    for accelerator in ("cpu", "gpu"):
        cfg.trainer.accelerator = faster.trainer.accelerator = accelerator
        assert run_precision(cfg) == ("32-true", "set by trainer.precision")
        assert run_precision(faster)[0] == "bf16-mixed"


def test_a_run_records_its_precision_memory_format_and_allocator(cnnlab):
    cnnlab("debug=smoke", "model=resnet18_s2")
    (run,) = run_dirs(cnnlab.cwd)
    runtime = read_results(run)["runtime"]
    assert runtime["device"] == "cpu" and runtime["compile"] is False
    assert runtime["precision"] == ("bf16-mixed" if cpu_supports_bf16() else "32-true")
    assert runtime["precision_reason"].startswith("auto: CPU")
    assert runtime["channels_last"] is True
    assert runtime["malloc_tuned"] is (platform.libc_ver()[0] == "glibc")  # tune_malloc: true by default
    # huge pages only where the caller's environment asked (cnnlab never restarts itself for them)
    assert runtime["huge_pages"] is huge_pages_requested()
