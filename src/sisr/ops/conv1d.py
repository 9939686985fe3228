"""Mamba's short convolution before the scan: ``silu(conv1d(x))``, depthwise over the sequence.

:func:`conv1d_silu_ref` is the plain-PyTorch spelling (ATen's depthwise conv, then SiLU), which trains;
:func:`conv1d_silu` runs the compiled CPU kernel (``csrc/scan_cpu.cpp``) when it can, in one pass
over ``x``, for inference only, and the reference otherwise. They agree within float rounding (the
kernel's SiLU uses its own exp, a few ulp from libm's; ``tests/test_ops_conv1d.py``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sisr.ops import _fused

__all__ = ["conv1d_silu", "conv1d_silu_ref"]


def conv1d_silu_ref(x: Tensor, weight: Tensor, bias: Tensor | None, *, anticausal: bool = False) -> Tensor:
    """``silu`` of the depthwise conv of each channel of `x` over the sequence, zero padded.

    Args:
        x: ``(batch, d, L)``.
        weight: ``(d, 1, K)``, as ``nn.Conv1d(d, d, K, groups=d)`` holds it.
        bias: ``(d,)`` or None.
        anticausal: False: ``out[t]`` sees ``x[t - K + 1 .. t]`` (Vim's forward direction, its
            ``conv1d`` with padding ``K - 1`` and the first L outputs kept); True: it sees
            ``x[t .. t + K - 1]`` (the backward direction without flipping the sequence).

    Returns:
        ``(batch, d, L)``.
    """
    k, length, groups = weight.shape[-1], x.shape[-1], x.shape[1]
    if anticausal:
        return F.silu(F.conv1d(F.pad(x, (0, k - 1)), weight, bias, groups=groups))
    # As nn.Conv1d(padding=K - 1) computes it in Vim (both sides padded, the first L kept).
    return F.silu(F.conv1d(x, weight, bias, padding=k - 1, groups=groups)[..., :length])


def conv1d_silu(x: Tensor, weight: Tensor, bias: Tensor | None, *, anticausal: bool = False) -> Tensor:
    """:func:`conv1d_silu_ref` through the compiled kernel, for float32/float64 CPU tensors outside
    autograd; anything else goes to the reference. Arguments and result as the reference."""
    kernel = _fused.inference_kernel("conv1d_silu", x, weight, bias)
    if kernel is None or x.dim() != 3 or weight.dtype != x.dtype:
        return conv1d_silu_ref(x, weight, bias, anticausal=anticausal)
    return kernel.conv1d_silu(x, weight, bias, anticausal)
