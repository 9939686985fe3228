"""The gate of the gated-dconv feed-forward network (Restormer's GDFN, MMA's ``FeedForward``).

``gelu(dw(x)[:, :C]) * dw(x)[:, C:]`` for a depthwise 3x3 convolution ``dw`` with zero padding 1 over
the ``2C`` channels that ``project_in`` wrote (optionally with ``project_in``'s bias still to add, so
that the product before needs no pass of its own over its output).

:func:`gated_dwconv3x3_ref` is the plain-PyTorch spelling (ATen's depthwise conv, chunk, GELU,
product), which trains; :func:`gated_dwconv3x3` runs the compiled CPU kernel (``csrc/scan_cpu.cpp``)
when it can, in one pass over ``x``, for inference only, and the reference otherwise. They agree within
float rounding (``tests/test_ops_dwconv.py``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sisr.ops import _fused

__all__ = ["gated_dwconv3x3", "gated_dwconv3x3_ref"]


def gated_dwconv3x3_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None, *, input_bias: Tensor | None = None
) -> Tensor:
    """``gelu(a) * b`` where ``a, b`` are the two channel halves of the depthwise 3x3 conv of `x`.

    Args:
        x: ``(batch, 2C, H, W)``.
        weight: ``(2C, 1, 3, 3)``, as ``nn.Conv2d(2C, 2C, 3, padding=1, groups=2C)`` holds it.
        bias: ``(2C,)`` or None: the conv's bias.
        input_bias: ``(2C,)`` or None: added to each channel of `x` before the conv (inside the zero
            padding).

    Returns:
        ``(batch, C, H, W)``.
    """
    if input_bias is not None:
        x = x + input_bias[:, None, None]
    gate, value = F.conv2d(x, weight, bias, padding=1, groups=x.shape[1]).chunk(2, dim=1)
    return F.gelu(gate) * value


def gated_dwconv3x3(
    x: Tensor, weight: Tensor, bias: Tensor | None, *, input_bias: Tensor | None = None
) -> Tensor:
    """:func:`gated_dwconv3x3_ref` through the compiled kernel, for float32/float64 CPU tensors outside
    autograd; anything else goes to the reference. Arguments as the reference; the kernel's result is
    contiguous (NCHW) whatever the layout of `x`."""
    kernel = _fused.inference_kernel("gated_dwconv3x3", x, weight, bias, input_bias)
    shape_ok = x.dim() == 4 and x.shape[1] % 2 == 0 and tuple(weight.shape) == (x.shape[1], 1, 3, 3)
    if kernel is None or not shape_ok or weight.dtype != x.dtype:
        return gated_dwconv3x3_ref(x, weight, bias, input_bias=input_bias)
    return kernel.gated_dwconv3x3(x, weight, bias, input_bias)
