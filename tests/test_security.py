"""Checkpoints and run directories are data: hostile ones, built here, make the real console scripts refuse
with one line and run nothing, unless trust_checkpoint=true (then they run: that is what trust means)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import cli_env
from PIL import Image

from cnnlab.untrusted import (
    CHECKPOINT_TARGETS,
    RUN_DATA_TARGETS,
    UntrustedConfigError,
    check_checkpoint_hparams,
    check_run_data,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
BIN = Path(sys.executable).parent
# where each config group's `_target_` lands in a checkpoint's hparams (or a run config's data section)
GROUP_POSITIONS = {
    "model": ("model", "net"),
    "activation": ("activation",),
    "optim": ("optimizer",),
    "scheduler": ("scheduler",),
    "freeze": ("freeze",),
    "loss": ("loss",),
    "data": ("data",),
    "data/augment": ("data", "augment"),
}


def console_script(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the installed console script ``name`` as a user does."""
    return subprocess.run([str(BIN / name), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True)


def assert_refused(result: subprocess.CompletedProcess, command: str, *expected: str) -> str:
    """Exit non-zero with one ``<command>: error: ...`` line holding ``expected``, and no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"{command}: error:")]
    for text in expected:
        assert text in line, line
    return line


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run of the cheapest model (``debug=smoke``): checkpoints and ``.hydra/config.yaml``."""
    cwd = tmp_path_factory.mktemp("train")
    result = console_script("cnnlab", ["debug=smoke", "model=cnn_baseline_s2", "test=false", "hydra.run.dir=run"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """One PNG to predict."""
    path = tmp_path_factory.mktemp("images") / "gray.png"
    Image.new("RGB", (32, 32), (128, 128, 128)).save(path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    """A file that hostile code creates; it must not exist after a refusal."""
    return tmp_path / "pwned"


def hostile_checkpoint(run_dir: Path, path: Path, group: str, node: dict) -> Path:
    """The run's best.ckpt with hparams ``group`` replaced by ``node``."""
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"][group] = node
    torch.save(checkpoint, path)
    return path


class Payload:
    """Unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_predict_refuses_os_system_in_the_activation(run_dir, image, marker, tmp_path):
    ckpt = hostile_checkpoint(
        run_dir,
        tmp_path / "h.ckpt",
        "activation",
        {"_target_": "os.system", "_args_": [f"touch {shlex.quote(str(marker))}"]},
    )
    result = console_script("cnnlab-predict", [f"ckpt_path={ckpt}", f"inputs={image}"], tmp_path)
    assert_refused(
        result, "cnnlab-predict", "hyper_parameters.activation._target_", "'os.system'", "trust_checkpoint=true"
    )
    assert not marker.exists()


def test_eval_refuses_builtins_exec_as_the_network(run_dir, marker, tmp_path):
    model = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]["model"]
    ckpt = hostile_checkpoint(
        run_dir,
        tmp_path / "h.ckpt",
        "model",
        {**model, "net": {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w')"]}},
    )
    result = console_script("cnnlab-eval", [f"ckpt_path={ckpt}", "hydra.run.dir=eval"], tmp_path)
    assert_refused(result, "cnnlab-eval", "hyper_parameters.model.net._target_", "'builtins.exec'")
    assert not marker.exists()


def test_export_refuses_torch_callables_that_write_files_or_compile_code(run_dir, marker, tmp_path):
    """torch.* was allowed before: torch.save writes any file, load_inline compiles and loads C++."""
    ckpt = hostile_checkpoint(
        run_dir, tmp_path / "h.ckpt", "loss", {"_target_": "torch.save", "_args_": ["x", str(marker)]}
    )
    result = console_script("cnnlab-export", [f"ckpt_path={ckpt}", f"output_dir={tmp_path}/out"], tmp_path)
    assert_refused(result, "cnnlab-export", "hyper_parameters.loss._target_", "'torch.save'")

    ckpt = hostile_checkpoint(
        run_dir,
        tmp_path / "h2.ckpt",
        "freeze",
        {"_target_": "torch.utils.cpp_extension.load_inline", "name": "x", "cpp_sources": "int f() { return 0; }"},
    )
    result = console_script("cnnlab-export", [f"ckpt_path={ckpt}", f"output_dir={tmp_path}/out"], tmp_path)
    assert_refused(result, "cnnlab-export", "hyper_parameters.freeze._target_", "load_inline")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_resume_refuses_a_hostile_checkpoint(run_dir, marker, tmp_path):
    ckpt = hostile_checkpoint(
        run_dir,
        tmp_path / "h.ckpt",
        "optimizer",
        {"_target_": "torch.save", "_partial_": True, "obj": "x", "f": str(marker)},
    )
    result = console_script(
        "cnnlab", ["debug=smoke", "model=cnn_baseline_s2", f"ckpt_path={ckpt}", "hydra.run.dir=resumed"], tmp_path
    )
    assert_refused(result, "cnnlab", "hyper_parameters.optimizer._target_", "'torch.save'")
    assert not marker.exists()


def test_a_pickled_payload_is_refused_and_runs_only_when_trusted(run_dir, image, marker, tmp_path):
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt = tmp_path / "pickled.ckpt"
    torch.save({**checkpoint, "extra": Payload(f"touch {shlex.quote(str(marker))}")}, ckpt)
    args = [f"ckpt_path={ckpt}", f"inputs={image}", f"output_dir={tmp_path}/out"]

    result = console_script("cnnlab-predict", args, tmp_path)
    assert_refused(result, "cnnlab-predict", "not unpickled", "trust_checkpoint=true")
    assert not marker.exists()

    console_script("cnnlab-predict", [*args, "trust_checkpoint=true"], tmp_path)
    assert marker.exists()  # trusted: the pickle ran, as documented


@pytest.mark.parametrize("kind", ["text", "truncated", "foreign_zip"])
def test_a_file_that_is_no_checkpoint_is_named_so_without_trust_advice(run_dir, image, kind, tmp_path):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "text":
        path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    elif kind == "truncated":
        data = (run_dir / "checkpoints" / "best.ckpt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "not torch")
    command = {"text": "cnnlab-predict", "truncated": "cnnlab-export", "foreign_zip": "cnnlab-eval"}[kind]
    args = {"cnnlab-predict": [f"inputs={image}"], "cnnlab-export": [], "cnnlab-eval": ["hydra.run.dir=eval"]}[command]
    line = assert_refused(
        console_script(command, [f"ckpt_path={path}", *args], tmp_path), command, f"not a cnnlab checkpoint: {path}"
    )
    assert "trust" not in line


@pytest.mark.parametrize("where", ["data", "data.seed"])
def test_eval_reads_the_run_config_as_data(run_dir, where, marker, tmp_path):
    """A shared run dir: its .hydra/config.yaml names code, at the top of `data` or nested in a value."""
    hostile = tmp_path / "hostile_run"
    (hostile / "checkpoints").mkdir(parents=True)
    (hostile / "checkpoints" / "best.ckpt").write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes())
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    payload = {"_target_": "torch.save", "_args_": ["x", str(marker)]}  # Hydra's own blocklist lets it through
    if where == "data":
        config["data"]["_target_"] = "os.system"
    else:
        config["data"]["seed"] = payload
    (hostile / ".hydra").mkdir()
    (hostile / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    args = [f"ckpt_path={hostile}/checkpoints/best.ckpt", "hydra.run.dir=eval"]

    result = console_script("cnnlab-eval", args, tmp_path)
    assert_refused(result, "cnnlab-eval", f"{where}._target_", "data=<name>")
    assert not marker.exists()
    if where == "data.seed":
        console_script("cnnlab-eval", [*args, "trust_checkpoint=true"], tmp_path)
        assert marker.exists()  # trusted: the run config's code ran


def conf_targets() -> list[tuple[str, tuple[str, ...], str]]:
    """(YAML file, position, `_target_`) for every config group whose `_target_` lands in saved hparams."""
    found = []
    for group, position in GROUP_POSITIONS.items():
        for path in sorted((CONF / group).glob("*.yaml")):
            node = yaml.safe_load(path.read_text()) or {}
            target = (node.get("net") or {}).get("_target_") if group == "model" else node.get("_target_")
            if target is not None:
                found.append((f"{group}/{path.name}", position, target))
    return found


def test_every_target_in_conf_is_allowlisted_at_its_place():
    """A new model, activation, optimizer, ... YAML fails here until its class is added to cnnlab/untrusted.py."""
    targets = conf_targets()
    assert len({name for name, _, _ in targets}) >= 40  # the scan found the groups
    allowed = {**CHECKPOINT_TARGETS, **RUN_DATA_TARGETS}
    missing = [(name, target) for name, position, target in targets if target not in allowed[position]]
    assert not missing, f"add to cnnlab/untrusted.py: {missing}"


def test_a_real_checkpoint_and_run_config_pass(run_dir):
    check_checkpoint_hparams(
        torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"], "best.ckpt"
    )
    from omegaconf import OmegaConf

    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    config.paths = {"data_dir": "/data"}
    check_run_data(OmegaConf.to_container(config.data, resolve=True), "config.yaml")


@pytest.mark.parametrize(
    "hparams, path",
    [
        (
            {"activation": {"_target_": "cnnlab.nn.activations.ReLU", "_args_": [1]}},
            "hyper_parameters.activation._args_",
        ),
        (
            {"activation": {"_target_": "cnnlab.nn.activations.ReLU", "_partial_": "yes"}},
            "hyper_parameters.activation._partial_",
        ),
        (
            {
                "model": {
                    "net": {"_target_": "cnnlab.models.resnet.ResNet50", "block": {"_target_": "torch.nn.Identity"}}
                }
            },
            "hyper_parameters.model.net.block._target_",
        ),
        ({"model": {"net": {"_target_": "torch.optim.Adam"}}}, "hyper_parameters.model.net._target_"),
        (
            {"loss": {"_target_": "cnnlab.training.loss.CrossEntropyLoss", "_recursive_": False}},
            "hyper_parameters.loss._recursive_",
        ),
        ({"class_names": ["a", "${oc.decode:'{_target_: os.system}'}"]}, "hyper_parameters.class_names.1"),
        ({"preprocessing": {"mean": [{"_target_": "os.getcwd"}]}}, "hyper_parameters.preprocessing.mean.0._target_"),
    ],
)
def test_refusals_name_the_key_path(hparams, path):
    with pytest.raises(UntrustedConfigError, match=f"^checkpoint x.ckpt: {path} "):
        check_checkpoint_hparams(hparams, "x.ckpt")
