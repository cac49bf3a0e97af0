"""Depthwise weight gradient of every MobileNetV3 layer at 64x64 input, batch 128: torch's own (oneDNN)
against cnnlab's Gram form (``cnnlab.nn.depthwise``), in ms, median of 15, in both memory formats.
The rows where cnnlab uses the Gram form are marked; run it to check the rule on another machine:

    python benchmarks/depthwise_grad.py [--batch-size 128]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from cnnlab.models.mobilenetv3 import CONFIGS
from cnnlab.nn.depthwise import DepthwiseConv2d, depthwise_weight_grad
from cnnlab.training.allocator import keep_freed_memory


def milliseconds(run: Callable[[], object], repeats: int = 15) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def layer_shapes(stem_size: int) -> list[tuple[int, int, int, int]]:
    """(channels, input size, kernel, stride) of the depthwise convs of both MobileNetV3 tables."""
    shapes = set()
    for table, _, _ in CONFIGS.values():
        size = stem_size
        for row in table:
            shapes.add((row.expansion, size, row.kernel, row.stride))
            size //= row.stride
    return sorted(shapes, key=lambda shape: (-shape[1], shape[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=64)
    args = parser.parse_args()
    keep_freed_memory()  # as cnnlab trains
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    print("| channels | map | kernel | stride | format | torch ms | Gram ms | speed-up | cnnlab uses |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for channels, size, kernel, stride in layer_shapes(args.img_size // 2):
        padding = kernel // 2
        layer = DepthwiseConv2d(channels, kernel, stride, padding)
        out_size = (size + 2 * padding - kernel) // stride + 1
        for name, memory_format in (("channels-last", torch.channels_last), ("contiguous", torch.contiguous_format)):
            images = torch.randn(args.batch_size, channels, size, size).contiguous(memory_format=memory_format)
            grad_output = torch.randn(args.batch_size, channels, out_size, out_size).contiguous(
                memory_format=memory_format
            )
            weight = layer.weight.detach().contiguous(memory_format=memory_format)
            # what autograd runs for nn.Conv2d's weight
            torch_ms = milliseconds(
                lambda: torch.ops.aten.convolution_backward(
                    grad_output,
                    images,
                    weight,
                    None,
                    [stride] * 2,
                    [padding] * 2,
                    [1, 1],
                    False,
                    [0, 0],
                    channels,
                    [False, True, False],
                )
            )
            gram_ms = milliseconds(lambda: depthwise_weight_grad(images, grad_output, kernel, stride, padding))
            with torch.enable_grad():
                used = "yes" if layer.uses_gram_gradient(images) else ""
            print(
                f"| {channels} | {size}x{size} | {kernel} | {stride} | {name} | {torch_ms:.2f} | {gram_ms:.2f} "
                f"| {torch_ms / gram_ms:.1f}x | {used} |"
            )


if __name__ == "__main__":
    main()
