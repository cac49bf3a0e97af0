"""cnnlab-predict and cnnlab-export on a tiny checkpoint trained by the real CLI, and export parity
for each model family."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import run_console_script
from hydra import compose, initialize_config_module
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

from cnnlab.export import example_inputs, export_metadata, export_model, load_runner
from cnnlab.inference import load_classifier, predict_files
from cnnlab.predict import find_images
from cnnlab.train import build_datamodule, build_module
from cnnlab.training.module import ImageClassifier

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONF_MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"


def run(module: str, args: list[str], cwd: Path) -> str:
    """``python -m <module> <args>`` in ``cwd``; its stdout, or the test fails with its output."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{module} {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """best.ckpt of a `debug=fast` run of the real CLI (digits, MobileNetV3-Small)."""
    cwd = tmp_path_factory.mktemp("train")
    run("cnnlab.cli", ["debug=fast", "test=false", "model=mobilenetv3_small"], cwd)
    return next(cwd.glob("outputs/*/*/checkpoints/best.ckpt"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Digits as 32x32 PNGs, 20x20 JPGs in a sub-folder, a corrupt PNG and a text file."""
    root = tmp_path_factory.mktemp("images")
    (root / "nested").mkdir()
    digits = load_digits()
    for i in range(6):
        gray = Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8))
        gray.resize((32, 32), Image.Resampling.BILINEAR).save(root / f"digit{i}.png")
        gray.convert("RGB").resize((20, 20)).save(root / "nested" / f"digit{i}.jpg", quality=95)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image")
    return root


def make_input_dependent(net: nn.Module, inputs: torch.Tensor) -> None:
    """Give an untrained network input-dependent, well-conditioned logits, like a trained one.

    At init its eval-mode BatchNorms (mean 0, var 1) shrink the signal until the logits barely depend
    on the input, which would make any parity check trivial. Their statistics are set from ``inputs``
    instead, the variance floored so that dead channels are not amplified into float32 noise. The two
    N(0, 0.01) Linear layers in a row of MobileNetV3's hybrid HOG branch shrink it too: they get
    PyTorch's default initialization.
    """
    for layer in getattr(net, "hog_branch", ()):
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    batchnorms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batch
    net.train()
    with torch.no_grad():
        net(inputs)
    net.eval()
    for bn in batchnorms:
        bn.running_var.clamp_(min=1e-2)


def test_predict_cli_writes_csv_and_lists_unreadable_files(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    stdout = run(
        "cnnlab.predict", [f"ckpt_path={checkpoint}", f"inputs={images}", f"output_dir={out}", "batch_size=4"], tmp_path
    )

    class_names = torch.load(checkpoint, weights_only=True)["hyper_parameters"]["class_names"]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    expected = {str(images / f"digit{i}.png") for i in range(6)} | {
        str(images / "nested" / f"digit{i}.jpg") for i in range(6)
    }
    assert {row["path"] for row in rows} == expected
    for row in rows:
        top = json.loads(row["top_k"])
        assert len(top) == 3 and set(top) <= set(class_names)
        assert list(top)[0] == row["prediction"] and top[row["prediction"]] == pytest.approx(
            float(row["confidence"]), abs=1e-6
        )
        assert list(top.values()) == sorted(top.values(), reverse=True)
        assert 0.0 <= float(row["confidence"]) <= 1.0
    assert "corrupt.png" in stdout and "12 predictions" in stdout
    assert (out / "unreadable.txt").read_text().startswith(str(images / "corrupt.png"))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # Hydra left nothing behind


def test_predictions_equal_the_module_forward_on_the_same_images(checkpoint, images):
    module = load_classifier(checkpoint)
    make_input_dependent(module.net, example_inputs(module, 32))
    paths, not_found = find_images(images)
    predictions = predict_files(module, paths, batch_size=5)

    # reference: decode each file independently (PIL RGB, bilinear resize to img_size, /255)
    arrays = [
        np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
        for p in predictions.sources
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = module(batch).softmax(1)
    assert (
        not not_found
        and len(predictions.sources) == 12
        and list(predictions.unreadable) == [str(images / "corrupt.png")]
    )
    assert expected.std(0).max() > 1e-3  # the comparison is not between constant outputs
    # equal up to float32 noise from batching 5 at a time instead of all 12
    torch.testing.assert_close(torch.from_numpy(predictions.probs), expected, rtol=0, atol=1e-4)
    assert predictions.predicted.tolist() == expected.argmax(1).tolist()


def test_export_cli_onnx_verifies_times_and_carries_metadata(checkpoint, tmp_path):
    out = tmp_path / "out"
    stdout = run(
        "cnnlab.export", [f"ckpt_path={checkpoint}", "format=onnx", f"output_dir={out}", "latency_runs=5"], tmp_path
    )

    assert float(re.search(r"max abs logit difference vs PyTorch (\S+)", stdout).group(1)) < 1e-4
    assert float(re.search(r"batch-1 CPU latency: (\S+) ms", stdout).group(1)) > 0
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    metadata = {p.key: p.value for p in onnx.load(str(out / "best.onnx")).metadata_props}
    assert json.loads(metadata["class_names"]) == hparams["class_names"]
    assert json.loads(metadata["preprocessing"]) == hparams["preprocessing"]
    logits = load_runner(out / "best.onnx", "onnx")(np.zeros((3, 3, 32, 32), np.float32))
    assert logits.shape == (3, len(hparams["class_names"]))  # batch axis is dynamic
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_loading_refuses_pickled_objects_and_foreign_targets_without_trust(checkpoint, tmp_path):
    ckpt = torch.load(checkpoint, weights_only=True)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({**ckpt, "extra": argparse.Namespace(a=1)}, pickled)
    with pytest.raises(RuntimeError, match="trust_checkpoint=true"):
        load_classifier(pickled)
    assert isinstance(load_classifier(pickled, trust_checkpoint=True), ImageClassifier)

    foreign = tmp_path / "foreign.ckpt"
    hparams = {**ckpt["hyper_parameters"], "activation": {"_target_": "os.system", "_partial_": True}}
    torch.save({**ckpt, "hyper_parameters": hparams}, foreign)
    with pytest.raises(RuntimeError, match=r"hyper_parameters.activation._target_ = 'os.system' is not one of"):
        load_classifier(foreign)


FAMILIES = {
    "mobilenetv3_small": ["model=mobilenetv3_small"],
    "mobilenetv3_hybrid": ["model=mobilenetv3_small", "model.net.hybrid=true"],
    "cnn_baseline_s4": ["model=cnn_baseline_s4"],
    "timm_resnet18": ["model=timm", "model.net.name=resnet18", "model.net.pretrained=false"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_exports_match_pytorch_for_each_model_family(family, tmp_path):
    overrides = FAMILIES[family]
    if not (CONF_MODELS / f"{overrides[0].split('=')[1]}.yaml").exists():
        pytest.skip(f"{overrides[0]} has not landed")
    with initialize_config_module("cnnlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    module = build_module(cfg, datamodule).eval()
    make_input_dependent(module.net, example_inputs(module, 32, seed=3))
    images = example_inputs(module, 5, seed=4)
    with torch.no_grad():
        expected = module.net(images).numpy()
    assert expected.std(0).max() > 1e-3  # the outputs depend on the input

    for fmt in ("onnx", "torchscript"):
        result = export_model(module, tmp_path / f"model.{fmt}", fmt, latency_runs=3)
        assert result["max_abs_diff"] < 1e-4 and result["latency_ms"] > 0
        assert np.abs(load_runner(Path(result["path"]), fmt)(images.numpy()) - expected).max() < 1e-4
    extra_files = dict.fromkeys(export_metadata(module), "")
    torch.jit.load(str(tmp_path / "model.torchscript"), _extra_files=extra_files)
    assert json.loads(extra_files["class_names"]) == module.hparams.class_names


def test_predict_matches_cnnlab_eval_on_the_same_images(checkpoint, tmp_path):
    """The two ways of running a checkpoint on image files agree image by image."""
    root = tmp_path / "digit_folders"
    digits = load_digits()
    for i in range(100):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8)).convert("RGB").save(folder / f"{i}.png")
    run("cnnlab.evaluate", [f"ckpt_path={checkpoint}", "data=imagefolder", f"data.root={root}", "split=test"], tmp_path)
    (report_csv,) = tmp_path.glob("outputs/eval/*/*/report/predictions.csv")
    rows = list(csv.DictReader(report_csv.open()))
    assert rows, "cnnlab-eval predicted nothing"

    module = load_classifier(checkpoint)
    predictions = predict_files(module, [root / row["source"] for row in rows])
    names = module.hparams.class_names
    for row, probs in zip(rows, predictions.probs):
        assert names[int(probs.argmax())] == row["predicted"], row["source"]
        assert abs(float(probs.max()) - float(row["confidence"])) < 1e-4, row["source"]


def test_predict_skips_missing_inputs_and_urls_and_fails_only_when_nothing_was_predicted(checkpoint, images, tmp_path):
    """One missing file or a URL no longer aborts the batch: the rest is predicted, each failure listed."""
    script = str(Path(sys.executable).parent / "cnnlab-predict")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    url, missing, image = "https://example.com/cat.png", tmp_path / "missing.png", images / "digit0.png"
    out = tmp_path / "out"
    result = run_console_script(
        script, [f"ckpt_path={checkpoint}", f"inputs=[{missing},{url},{image}]", f"output_dir={out}"], tmp_path, env
    )
    assert [row["path"] for row in csv.DictReader((out / "predictions.csv").open())] == [str(image)]
    listed = dict(line.split("\t") for line in (out / "unreadable.txt").read_text().splitlines())
    assert listed == {str(missing): "no such file or folder", url: listed[url]} and "does not download" in listed[url]
    assert "2 inputs not predicted" in result.stdout and url in result.stdout

    result = run_console_script(
        script,
        [f"ckpt_path={checkpoint}", f"inputs=[{missing},{url}]", f"output_dir={out}"],
        tmp_path,
        env,
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cnnlab-predict: error: none of the 2 inputs could be predicted" in result.stderr
