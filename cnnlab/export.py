"""``cnnlab-export``: write a trained network as ONNX or TorchScript and check it right away.

The exported model takes the normalized float batch (N, C, H, W), batch size free, and returns
logits; class names and preprocessing travel in its metadata. After writing, the file is run
(onnxruntime for ONNX) on a batch of another size than the export example and compared with PyTorch,
then its batch-1 CPU latency is measured.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from cnnlab.data.preprocess import preprocess
from cnnlab.errors import CnnlabError, exit_on_user_error
from cnnlab.extras import require
from cnnlab.inference import load_classifier
from cnnlab.training.checkpoints import run_dir_of
from cnnlab.training.module import ImageClassifier

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXAMPLE_BATCH = 2  # traced batch size; verification uses another one to prove the batch axis is free


class ExportError(CnnlabError):
    """The network could not be exported, or the exported model disagrees with PyTorch."""


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise CnnlabError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        require("onnx", "onnxruntime")  # the optional cnnlab[export]


def export_metadata(module: ImageClassifier) -> dict[str, str]:
    """What a deployment needs besides the weights, as JSON strings."""
    return {
        "class_names": json.dumps(list(module.hparams.class_names)),
        "preprocessing": json.dumps(dict(module.hparams.preprocessing)),
        "input": "float32 NCHW, RGB (or gray for in_chans=1) resized to img_size, /255, then (x - mean) / std",
        "output": "logits (N, num_classes); softmax for probabilities",
    }


def example_inputs(module: ImageClassifier, batch_size: int, seed: int = 0) -> torch.Tensor:
    """Random smooth uint8 images, each with its own brightness and contrast, through the checkpoint's
    preprocessing. Unlike i.i.d. pixel noise, which pooling averages away, they differ as much as
    real images do, so the comparison covers how the output depends on the input."""
    preprocessing = module.hparams.preprocessing
    size = preprocessing["img_size"]
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch_size, preprocessing["in_chans"], 4, 4, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    low, high = torch.rand(2, batch_size, 1, 1, 1, generator=generator).sort(dim=0).values
    images = (low + (high - low) * smooth.clamp(0, 1)) * 255
    return preprocess(images.round().to(torch.uint8), preprocessing)


def _describe(module: ImageClassifier) -> str:
    net = module.hparams.model["net"]
    options = {k: v for k, v in net.items() if k != "_target_"}
    return f"{net['_target_']}({', '.join(f'{k}={v}' for k, v in options.items())})"


def _constant(g, value: float, dtype: torch.dtype):
    # a 1-element tensor, not a 0-d one: the exporter would cast a 0-d constant to float32
    return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))


def _hypot_symbolic(g, a, b):
    """aten::hypot (no ONNX op): sqrt(a^2 + b^2) in float64, so float32 results round as torch's do
    (HOG's channel choice is an argmax over magnitudes; an ulp off flips near-ties)."""
    import onnx

    a64, b64 = (g.op("Cast", v, to_i=onnx.TensorProto.DOUBLE) for v in (a, b))
    out = g.op("Sqrt", g.op("Add", g.op("Mul", a64, a64), g.op("Mul", b64, b64)))
    return out if a.type().scalarType() == "Double" else g.op("Cast", out, to_i=onnx.TensorProto.FLOAT)


def _atan2_symbolic(g, y, x):
    """aten::atan2 as torch computes it, including atan2(0, 0) = 0, atan2(+0, x<0) = pi and x = 0.

    onnxruntime has Atan for float32 only; in float64 (HOG's histogram precision) the float32 atan is
    refined by one Newton step on sin(a) - t cos(a), to float64 accuracy, so orientation bins agree.
    """
    import onnx

    double = y.type().scalarType() == "Double"
    dtype = torch.float64 if double else torch.float32
    zero, one = _constant(g, 0.0, dtype), _constant(g, 1.0, dtype)
    x_zero = g.op("Equal", x, zero)
    slope = g.op("Div", y, g.op("Where", x_zero, one, x))
    if double:
        guess = g.op("Atan", g.op("Cast", slope, to_i=onnx.TensorProto.FLOAT))
        guess = g.op("Cast", guess, to_i=onnx.TensorProto.DOUBLE)
        sin, cos = g.op("Sin", guess), g.op("Cos", guess)
        step = g.op("Div", g.op("Sub", sin, g.op("Mul", slope, cos)), g.op("Add", cos, g.op("Mul", slope, sin)))
        atan = g.op("Sub", guess, step)
    else:
        atan = g.op("Atan", slope)
    y_nonneg = g.op("GreaterOrEqual", y, zero)
    pi, half_pi = _constant(g, math.pi, dtype), _constant(g, math.pi / 2, dtype)
    left = g.op("Where", y_nonneg, g.op("Add", atan, pi), g.op("Sub", atan, pi))
    on_y_axis = g.op("Where", g.op("Equal", y, zero), zero, g.op("Where", y_nonneg, half_pi, g.op("Neg", half_pi)))
    return g.op("Where", x_zero, on_y_axis, g.op("Where", g.op("Less", x, zero), left, atan))


# ops the TorchScript-based ONNX exporter lacks or onnxruntime cannot run in float64 (the hybrid HOG)
ONNX_SYMBOLICS = {"aten::hypot": _hypot_symbolic, "aten::atan2": _atan2_symbolic}
SYMBOLICS_OPSET = 9  # registered from this opset up


@contextmanager
def _onnx_symbolics() -> Iterator[None]:
    for name, symbolic in ONNX_SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, symbolic, SYMBOLICS_OPSET)
    try:
        yield
    finally:
        for name in ONNX_SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, SYMBOLICS_OPSET)


def _export_onnx(net: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str], opset: int) -> None:
    import onnx

    # the TorchScript-based exporter: the dynamo one needs onnxscript, which cnnlab does not install
    with _onnx_symbolics():
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    model = onnx.load(str(path))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _export_torchscript(net: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    traced = torch.jit.trace(net, example)
    torch.jit.save(traced, str(path), _extra_files=metadata)


@contextmanager
def _torch_threads(num_threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_runner(path: Path, fmt: str, num_threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the exported file on a float32 NCHW array, returning logits."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x})[0]
    scripted = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), _torch_threads(num_threads):
            return scripted(torch.from_numpy(x)).numpy()

    return run


def median_latency_ms(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, runs: int, warmup: int = 5) -> float:
    """Median wall time of ``run(image)`` in milliseconds over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def export_model(
    module: ImageClassifier,
    path: str | Path,
    fmt: str = "onnx",
    opset: int = 17,
    verify_batch_size: int = 8,
    atol: float = 1e-4,
    latency_runs: int = 50,
    num_threads: int = 1,
) -> dict:
    """Export ``module``'s network to ``path``, verify it against PyTorch and time batch-1 inference.

    Returns ``{"path", "format", "max_abs_diff", "latency_ms", ...}``; raises :class:`ExportError`
    if export fails or the max abs logit difference is ``>= atol``.
    """
    _check_format(fmt)
    if verify_batch_size == EXAMPLE_BATCH:
        raise ValueError(f"verify_batch_size must differ from the export example batch ({EXAMPLE_BATCH})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = module.net.float().cpu().eval()  # the plain network: no torch.compile wrapper, fp32
    metadata = export_metadata(module)
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _export_onnx(net, example_inputs(module, EXAMPLE_BATCH), path, metadata, opset)
            else:
                _export_torchscript(net, example_inputs(module, EXAMPLE_BATCH), path, metadata)
    except Exception as error:
        raise ExportError(
            f"{fmt} export of {_describe(module)} failed: {type(error).__name__}: {error}\n"
            "An op of this network has no equivalent in the target format (for ONNX: at opset "
            f"{opset}; try opset=<higher>, or add a symbolic to ONNX_SYMBOLICS). The message above names it."
        ) from error

    inputs = example_inputs(module, verify_batch_size, seed=1)
    with torch.inference_mode():
        expected = net(inputs).numpy()
    run = load_runner(path, fmt, num_threads)
    try:
        actual = run(inputs.numpy())
    except Exception as error:
        raise ExportError(
            f"the exported {fmt} model of {_describe(module)} fails on a batch of {verify_batch_size} "
            f"(exported with {EXAMPLE_BATCH}): {type(error).__name__}: {error}"
        ) from error
    max_abs_diff = float(np.abs(actual - expected).max())
    if not max_abs_diff < atol:
        raise ExportError(
            f"the exported {fmt} model of {_describe(module)} disagrees with PyTorch: max abs logit "
            f"difference {max_abs_diff:.3g} >= {atol:g} (fp32, batch {verify_batch_size})"
        )
    return {
        "path": str(path),
        "format": fmt,
        "max_abs_diff": max_abs_diff,
        "verify_batch_size": verify_batch_size,
        "latency_ms": median_latency_ms(run, inputs[:1].numpy(), latency_runs),
        "latency_runs": latency_runs,
        "num_threads": num_threads,
    }


@hydra.main(version_base="1.3", config_path="pkg://cnnlab.conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Export ``cfg.ckpt_path`` as ``cfg.format``, verify and time it, and print the figures."""
    _check_format(cfg.format)
    module = load_classifier(cfg.ckpt_path, cfg.trust_checkpoint)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir_of(cfg.ckpt_path) / "export"
    path = output_dir / (Path(cfg.ckpt_path).stem + FORMATS[cfg.format])
    result = export_model(
        module, path, cfg.format, cfg.opset, cfg.verify_batch_size, cfg.atol, cfg.latency_runs, cfg.num_threads
    )
    print(f"wrote {result['path']}")
    print(
        f"verified: max abs logit difference vs PyTorch {result['max_abs_diff']:.3g} "
        f"(< {cfg.atol:g}, batch {result['verify_batch_size']})"
    )
    print(
        f"batch-1 CPU latency: {result['latency_ms']:.3f} ms "
        f"(median of {result['latency_runs']} runs, {result['num_threads']} thread(s))"
    )


if __name__ == "__main__":
    main()
