"""Layer norm over the last dimension of a contiguous tensor with short rows (SeemoRe's LayerNorm2d on
the (B, H, W, C) view of channels_last features, C = 36 or 48).

:func:`layer_norm_rows_ref` is ``F.layer_norm`` over that dimension, which trains; :func:`layer_norm_rows`
runs the compiled CPU kernel (``csrc/scan_cpu.cpp``) when it can, for inference only, on float32 or
bfloat16 input (computing in float32 and rounding once), and the reference otherwise. ATen's kernel pays
a per-row overhead that dominates at such short rows. They agree within float rounding
(``tests/test_ops_layernorm.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sisr.ops import _fused

__all__ = ["layer_norm_rows", "layer_norm_rows_ref"]


def layer_norm_rows_ref(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Layer norm of `x` over its last dimension ``C``, with (C,) `weight` and `bias`."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def layer_norm_rows(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """:func:`layer_norm_rows_ref` through the compiled kernel, for contiguous float32/bfloat16 CPU `x`
    outside autograd; anything else goes to the reference. The result is contiguous, in the dtype of `x`."""
    dtypes = (torch.float32, torch.bfloat16)
    kernel = _fused.inference_kernel("layer_norm_rows", x, weight, bias, dtypes=dtypes)
    c = x.shape[-1] if x.dim() else 0
    shape_ok = x.is_contiguous() and c > 0 and tuple(weight.shape) == tuple(bias.shape) == (c,)
    if kernel is None or not shape_ok:
        return layer_norm_rows_ref(x, weight, bias, eps)
    return kernel.layer_norm_rows(x, weight, bias, eps)
