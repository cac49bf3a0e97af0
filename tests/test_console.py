"""What the real console scripts (``.venv/bin/cnnlab``, ``cnnlab-export``) print: the end-of-run and
end-of-sweep blocks, one line per event, --help, one-line errors for command-line mistakes and missing
extras, run dir names, and conf/local defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import read_results, run_dirs

BIN = Path(sys.executable).parent
TINY = ["debug=fast", "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
# modules that are not installed, as Python sees them: None in sys.modules makes `import` raise
# ModuleNotFoundError and importlib.util.find_spec return None; sitecustomize runs before the console script
BLOCKER = """import os, sys
for name in os.environ["CNNLAB_TEST_BLOCK"].split(","):
    sys.modules[name] = None
"""


def console(script: str, *args: str, cwd: Path, without: tuple[str, ...] = (), check: bool = True):
    """Run ``script`` from the venv's bin/ as a user does (warnings shown), with ``without`` not installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    if without:
        (cwd / "not_installed").mkdir(exist_ok=True)
        (cwd / "not_installed" / "sitecustomize.py").write_text(BLOCKER)
        env.update(PYTHONPATH=str(cwd / "not_installed"), CNNLAB_TEST_BLOCK=",".join(without))
    result = subprocess.run([str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(
            f"{script} {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def one_line_error(result: subprocess.CompletedProcess, script: str = "cnnlab") -> str:
    """The error line of a failed command, checked to be its whole stderr, not a traceback."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"{script}: error: ")
    return line


def test_run_ends_with_where_and_what_and_prints_each_event_once(tmp_path):
    result = console("cnnlab", *TINY, cwd=tmp_path)
    (run,) = run_dirs(tmp_path)
    results = read_results(run)
    block = result.stdout[result.stdout.index("Run finished: ") :].splitlines()
    assert block[0] == f"Run finished: {run.relative_to(tmp_path)}"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", str(run.relative_to(tmp_path / "outputs")))
    assert f"acc {results['test/acc']:.4f}" in block[1] and f"auroc {results['test/auroc_macro']:.4f}" in block[1]
    assert f"f1 {results['test/f1_macro']:.4f}" in block[1] and f"loss {results['test/loss']:.4f}" in block[1]
    assert f"best epoch {results['best_epoch']}, tested epoch {results['tested_epoch']} (of 2 run)" in block[2]
    paths = {line.split()[0]: tmp_path / line.split()[1] for line in block[4:]}
    assert paths == {"report": run / "report" / "report.md", "checkpoint": run / "checkpoints" / "best.ckpt"}
    assert all(path.is_file() for path in paths.values())

    output = result.stdout + result.stderr
    assert output.count("`Trainer.fit` stopped: `max_epochs=2` reached.") == 1  # Lightning's own handler is gone
    assert "`Trainer.fit` stopped" in (run / "train.log").read_text()  # ... and Hydra's log file has its lines
    assert "litlogger" not in output and "LeafSpec" not in output
    (classes_line,) = [line for line in output.splitlines() if "images per class" in line]
    assert len(classes_line) < 200 and "train " in classes_line


def test_sweep_ends_with_summary_and_best_job(tmp_path):
    result = console("cnnlab", "-m", "optim.lr=1e-3,1e-9", *TINY, cwd=tmp_path)
    block = result.stdout[result.stdout.index("Sweep finished: ") :].splitlines()
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert block[0] == f"Sweep finished: {sweep.relative_to(tmp_path)} (2 of 2 jobs completed)"
    assert block[1].split() == ["summary", str((sweep / "summary.md").relative_to(tmp_path))]
    assert (sweep / "summary.md").is_file()
    scores = {lr: read_results(sweep / job)["val/acc_best"] for job, lr in (("0", "0.001"), ("1", "1e-09"))}
    best = max(scores, key=scores.get)
    assert f"optim.lr={best}" in block[2] and f"val/acc_best {scores[best]:.4f}" in block[2]


def test_a_run_in_a_taken_second_gets_a_dir_of_its_own(tmp_path):
    now = datetime.now()
    taken = [now + timedelta(seconds=s) for s in range(-5, 180)]  # every name this run could be given
    for moment in taken:
        (tmp_path / "outputs" / moment.strftime("%Y-%m-%d/%H-%M-%S")).mkdir(parents=True, exist_ok=True)
    console("cnnlab", *TINY, "trainer.max_epochs=1", cwd=tmp_path)
    (run,) = run_dirs(tmp_path)
    assert re.fullmatch(r"\d{2}-\d{2}-\d{2}-2", run.name)
    assert sorted(p.name for p in run.parent.iterdir() if p.name.startswith(run.name[:8])) == [run.name[:8], run.name]


def test_help_opens_with_cnnlab_and_example_commands(tmp_path):
    result = console("cnnlab", "--help", cwd=tmp_path)
    assert result.stdout.startswith("cnnlab: ") and "powered by Hydra" not in result.stdout
    for command in (
        "cnnlab model=mobilenetv3_small activation=hard_elu data=eurosat",
        "cnnlab -m optim.lr=1e-1,1e-2,1e-3,1e-4,1e-5",
        "cnnlab experiment=s0_mobilenetv3_eurosat",
        "cnnlab logger=wandb",
    ):
        assert command in result.stdout
    assert "model: alexnet_cifar, " in result.stdout  # the groups and their options
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["optim.lrr=0.1"], "optim.lrr is not a config key: did you mean optim.lr?"),
        (["sed=1"], "sed is not a config key: did you mean seed"),
        (
            ["model=mobilenetv3_smal"],
            "model=mobilenetv3_smal is not an option of model: did you mean mobilenetv3_small",
        ),
    ],
    ids=["nested_key", "top_level_key", "group_option"],
)
def test_mistyped_name_gets_the_closest_valid_ones_in_one_line(tmp_path, args, expected):
    line = one_line_error(console("cnnlab", *args, "debug=fast", cwd=tmp_path, check=False))
    assert expected in line
    assert not (tmp_path / "outputs").exists()


def test_unknown_timm_model_names_the_key_and_close_models(tmp_path):
    result = console("cnnlab", "model=timm", "model.net.name=resnet999", "debug=fast", cwd=tmp_path, check=False)
    line = one_line_error(result)
    assert "model.net.name=resnet999 is not a timm model: did you mean " in line and "too small" not in line
    suggestions = line.split("did you mean ")[1].rstrip("?").split(", ")
    assert {"resnet50", "resnet18"} <= set(suggestions)


SEARCH = ["-m", "hparams_search=s1_tpe", "debug=fast"]
SLURM = ["-m", "hydra/launcher=slurm", "debug=fast"]


@pytest.mark.parametrize(
    ("script", "args", "without", "extra"),
    [
        ("cnnlab-export", ["ckpt_path=best.ckpt", "format=onnx"], ("onnx", "onnxruntime"), "export"),
        ("cnnlab", SEARCH, ("optuna",), "search"),
        ("cnnlab", SEARCH, ("hydra_plugins.hydra_optuna_sweeper", "optuna"), "search"),
        ("cnnlab", SLURM, ("submitit",), "slurm"),
        ("cnnlab", SLURM, ("hydra_plugins.hydra_submitit_launcher", "submitit"), "slurm"),
    ],
    ids=[
        "export_without_onnx",
        "search_without_optuna",
        "search_without_plugin",
        "slurm_without_submitit",
        "slurm_without_plugin",
    ],
)
def test_missing_extra_names_its_pip_install(tmp_path, script, args, without, extra):
    """Without the package the extra installs, or without the Hydra plugin too (its configs are then unknown)."""
    line = one_line_error(console(script, *args, cwd=tmp_path, without=without, check=False), script)
    assert line.endswith(f"which is not installed: pip install 'cnnlab[{extra}]'")
    assert without[0].rsplit(".", 1)[-1].replace("_", "-") in line
    assert not list(tmp_path.glob("outputs/**/results.json"))


def test_local_defaults_apply_and_the_command_line_wins(tmp_path):
    local = tmp_path / "conf" / "local" / "default.yaml"
    local.parent.mkdir(parents=True)
    local.write_text("# @package _global_\nseed: 7\npaths:\n  data_dir: /datasets\n")
    assert "\nseed: 7\n" in console("cnnlab", "--cfg", "job", cwd=tmp_path).stdout
    assert "  data_dir: /datasets\n" in console("cnnlab", "--cfg", "job", cwd=tmp_path).stdout
    assert "\nseed: 3\n" in console("cnnlab", "--cfg", "job", "seed=3", cwd=tmp_path).stdout
    local.unlink()
    assert "\nseed: 42\n" in console("cnnlab", "--cfg", "job", cwd=tmp_path).stdout


def test_local_defaults_are_git_ignored():
    root = Path(__file__).resolve().parents[1]
    ignored = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "conf/local/default.yaml"], capture_output=True, text=True
    )
    assert ignored.stdout.strip() == "conf/local/default.yaml"


def test_pretrained_timm_model_gets_its_weights_normalization_unless_data_sets_one(tmp_path):
    """tf_mobilenetv3 weights expect inputs scaled to [-1, 1] (mean = std = 0.5), not ImageNet's mean/std."""
    import timm
    import torch

    from cnnlab.training.module import ImageClassifier

    name = "tf_mobilenetv3_small_minimal_100"
    weights = tmp_path / f"{name}.pth"
    torch.save(timm.create_model(name, pretrained=False, num_classes=0).state_dict(), weights)
    model = ["model=timm", f"model.net.name={name}", f"model.net.weights_path={weights}", "debug=fast", "test=false"]
    console("cnnlab", *model, cwd=tmp_path)
    console("cnnlab", *model, "data.mean=[0.1,0.2,0.3]", "data.std=[0.4,0.5,0.6]", cwd=tmp_path)
    own, chosen = (
        ImageClassifier.load_from_checkpoint(run / "checkpoints/best.ckpt", map_location="cpu").hparams.preprocessing
        for run in run_dirs(tmp_path)
    )
    assert (own["mean"], own["std"]) == ([0.5] * 3, [0.5] * 3)
    assert chosen["mean"] == pytest.approx([0.1, 0.2, 0.3]) and chosen["std"] == pytest.approx([0.4, 0.5, 0.6])
