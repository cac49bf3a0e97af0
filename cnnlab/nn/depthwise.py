"""A depthwise convolution whose weight gradient on small feature maps is one batched matmul.

For kernels larger than 3x3, oneDNN has no depthwise kernel for the weight gradient and runs its generic
grouped convolution, which pads every single-channel group to a 16x16 block: on the 8x8 to 2x2 maps of
MobileNetV3's last stages (5x5 kernels, up to 960 channels) that gradient took up to 50x the forward pass
and a fifth of MobileNetV3-small's training step on a 2-core CPU. Computed instead from the per-channel
Gram matrix of output-gradient positions by input positions, it is 1.6-10x faster there in channels-last
memory format (7-54x in contiguous), exact to float rounding; ``benchmarks/depthwise_grad.py`` prints both
for every MobileNetV3 layer. :func:`set_gram_gradient` switches it for a built network.

Drop this module when oneDNN (torch's CPU convolutions) gains a depthwise weight-gradient kernel for 5x5 kernels
on small maps: ``python benchmarks/depthwise_grad.py`` then shows torch's time no longer above the Gram form's
on the rows it marks."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Where the Gram form wins (measured per layer, benchmarks/depthwise_grad.py): kernels from 5x5 (oneDNN's
# depthwise kernel covers 3x3), input maps up to 8x8 (the Gram matrix grows with the map's pixels squared)
GRAM_MIN_KERNEL = 5
GRAM_MAX_INPUT_PIXELS = 64


@lru_cache(maxsize=64)
def _tap_index(
    in_size: tuple[int, int], out_size: tuple[int, int], kernel: int, stride: int, padding: int, device: torch.device
) -> torch.Tensor:
    """For each (output position, input position) pair, the kernel tap linking them, or ``kernel**2``
    (a discarded slot) when none does; flattened in the Gram matrix's order."""

    def offsets(in_len: int, out_len: int) -> torch.Tensor:  # (out_len, in_len): tap offset along one axis
        return torch.arange(in_len, device=device) - stride * torch.arange(out_len, device=device)[:, None] + padding

    (height, width), (out_h, out_w) = in_size, out_size
    rows = offsets(height, out_h).view(out_h, 1, height, 1)  # dims: output row, output col, input row, input col
    cols = offsets(width, out_w).view(1, out_w, 1, width)
    inside = (rows >= 0) & (rows < kernel) & (cols >= 0) & (cols < kernel)
    return torch.where(inside, rows * kernel + cols, kernel * kernel).reshape(-1)


def depthwise_weight_grad(
    images: torch.Tensor, grad_output: torch.Tensor, kernel: int, stride: int, padding: int
) -> torch.Tensor:
    """Gradient of a square depthwise conv's weight (C, 1, k, k) from its input (N, C, H, W) and output
    gradient (N, C, H', W'): for every channel, all (output, input) position products summed over the
    batch in one batched matmul, then added into the kernel tap each pair shares."""
    batch, channels, height, width = images.shape
    out_h, out_w = grad_output.shape[2:]
    grads = grad_output.permute(1, 2, 3, 0).reshape(channels, out_h * out_w, batch).contiguous()
    inputs = images.permute(1, 0, 2, 3).reshape(channels, batch, height * width).contiguous()
    gram = torch.bmm(grads, inputs).view(channels, -1)
    taps = _tap_index((height, width), (out_h, out_w), kernel, stride, padding, images.device)
    weight_grad = gram.new_zeros(channels, kernel * kernel + 1).index_add_(1, taps, gram)
    return weight_grad[:, : kernel * kernel].reshape(channels, 1, kernel, kernel)


class _GramDepthwiseConv(torch.autograd.Function):
    """conv2d forward; backward: oneDNN's input gradient, the Gram weight gradient."""

    @staticmethod
    def forward(ctx, images, weight, bias, stride: int, padding: int):  # noqa: ANN001, ANN205 (autograd API)
        ctx.save_for_backward(images, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(images, weight, bias, stride, padding, 1, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205 (autograd API)
        images, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        needs_images, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_images = grad_weight = grad_bias = None
        if needs_images:
            grad_images = torch.nn.grad.conv2d_input(
                images.shape, weight, grad_output, stride, padding, groups=weight.shape[0]
            )
        if needs_weight:
            grad_weight = depthwise_weight_grad(images, grad_output, weight.shape[-1], stride, padding)
        if needs_bias:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_images, grad_weight, grad_bias, None, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel, stride, padding, groups=channels)`` (same parameters and
    state dict) that trains with the Gram weight gradient where it is faster: on CPU, in float32
    without autocast, kernels from 5x5 on maps up to 8x8. Anywhere else, or with ``gram_gradient=False``
    (torch's own gradient, as the benchmark's conventional recipe trains), it is ``nn.Conv2d``."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        gram_gradient: bool = True,
    ) -> None:
        super().__init__(channels, channels, kernel_size, stride, padding, groups=channels, bias=bias)
        self.gram_gradient = gram_gradient

    def uses_gram_gradient(self, images: torch.Tensor) -> bool:
        """Whether a training step on ``images`` takes the Gram weight gradient."""
        return (
            not torch.compiler.is_compiling()  # torch.compile generates its own kernels
            and self.gram_gradient
            and images.device.type == "cpu"
            and images.dim() == 4  # batched: nn.Conv2d also takes a single (C, H, W) image
            and images.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and not torch.is_autocast_enabled("cpu")
            and self.kernel_size[0] >= GRAM_MIN_KERNEL
            and images.shape[-2] * images.shape[-1] <= GRAM_MAX_INPUT_PIXELS
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.uses_gram_gradient(images):
            return super().forward(images)
        return _GramDepthwiseConv.apply(images, self.weight, self.bias, self.stride[0], self.padding[0])


def set_gram_gradient(net: nn.Module, enabled: bool) -> int:
    """Let every :class:`DepthwiseConv2d` in ``net`` take the Gram weight gradient where it is faster
    (``enabled``), or always torch's own; returns how many layers were set (0 for a network without any)."""
    layers = [module for module in net.modules() if isinstance(module, DepthwiseConv2d)]
    for layer in layers:
        layer.gram_gradient = enabled
    return len(layers)
