"""Fused CPU inference ops shared by the networks' fast paths (oneDNN convolutions with post-ops).

Each function here replaces a short chain of plain PyTorch calls, its reference, and returns the same
values within float rounding (the oneDNN convolution accumulates in another order; the fused GELU is the
exact erf form). They are meant for float32 CPU inference only: callers decide with
:func:`sisr.models._fastpath.fast_path_allowed` and :func:`fused_convs_available`, and run the reference
otherwise. None of them keeps state, so there is nothing to invalidate when the weights change: the
convolution's current ``weight`` and ``bias`` (or slices of them passed as `weight` / `bias`) are read on
every call.

References:

* ``conv2d(conv, x, unary="gelu")`` is ``F.gelu(conv(x))``; ``unary="none"`` is ``conv(x)``.
* ``conv2d_binary(conv, x, other, binary="mul")`` is ``conv(x) * other``, ``"add"`` is ``conv(x) + other``.
* ``conv2d_add_(out, conv, x)`` is ``out += conv(x)``, in place.
* ``layer_norm_channels(x, weight, bias, eps)`` is a layer norm over dim 1 of a (B, C, H, W) tensor.

oneDNN picks its fastest kernels for channels_last inputs, and the outputs follow the input's layout, so a
network converts its features once to channels_last and stays there.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Unary = Literal["none", "gelu"]
Binary = Literal["add", "mul"]


def fused_convs_available() -> bool:
    """Whether this torch build has oneDNN (mkldnn) and its pointwise-fused convolution ops."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _geometry(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    """Padding, stride, dilation and groups of `conv` as oneDNN takes them."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("fused convolutions need zero padding given as integers")
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def _unary_args(unary: Unary) -> tuple[str, list[float], str]:
    # "none" as the GELU algorithm is oneDNN's exact erf GELU, nn.GELU()'s default.
    return (unary, [], "none") if unary == "gelu" else ("none", [], "")


def conv2d(
    conv: nn.Conv2d,
    x: Tensor,
    *,
    unary: Unary = "none",
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """``conv(x)``, then GELU if `unary` is "gelu", in one oneDNN call.

    Args:
        conv: Supplies the geometry, and the weight and bias unless `weight` is given.
        x: (B, C_in, H, W) float32 CPU input, channels_last for the fastest kernels.
        unary: Activation applied to the convolution's output.
        weight: Overrides ``conv.weight`` (e.g. the rows of one output half); `bias` then overrides
            ``conv.bias`` (None: no bias).
        bias: See `weight`.

    Returns:
        (B, C_out, H', W') in the layout of `x`.
    """
    padding, stride, dilation, groups = _geometry(conv)
    if weight is None:
        weight, bias = conv.weight, conv.bias
    attr, scalars, algorithm = _unary_args(unary)
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, padding, stride, dilation, groups, attr, scalars, algorithm
    )


def conv2d_binary(
    conv: nn.Conv2d,
    x: Tensor,
    other: Tensor,
    *,
    binary: Binary,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """``conv(x) * other`` or ``conv(x) + other``, in one oneDNN call.

    (oneDNN's binary post-op takes no GELU after it in this torch: "Unary Fusion behavior undefined".)

    Args:
        conv: As in :func:`conv2d`.
        x: (B, C_in, H, W) input.
        other: (B, C_out, H', W'), the shape of the convolution's output, in the layout of `x`.
        binary: "mul" or "add".
        weight: As in :func:`conv2d`.
        bias: As in :func:`conv2d`.

    Returns:
        A new (B, C_out, H', W') tensor; `other` is not modified.
    """
    padding, stride, dilation, groups = _geometry(conv)
    if weight is None:
        weight, bias = conv.weight, conv.bias
    # The binary ops take "no activation" as None, not as "none".
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, weight, bias, padding, stride, dilation, groups, binary, None, None, [], None
    )


def conv2d_add_(
    out: Tensor, conv: nn.Conv2d, x: Tensor, *, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """``out += conv(x)`` in place (oneDNN's sum post-op), returning `out`.

    Args:
        out: (B, C_out, H', W') accumulator, contiguous in the layout of `x`.
        conv: As in :func:`conv2d`.
        x: (B, C_in, H, W) input.
        weight: As in :func:`conv2d`.
        bias: As in :func:`conv2d`.
    """
    padding, stride, dilation, groups = _geometry(conv)
    if weight is None:
        weight, bias = conv.weight, conv.bias
    torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, weight, bias, padding, stride, dilation, groups, "add", None, None, [], None
    )
    return out


def layer_norm_channels(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Layer norm over the channels of (B, C, H, W) `x` by ``F.layer_norm`` on its (B, H, W, C) view.

    For a channels_last `x` the view is contiguous, so this is one pass without copies, and the result is
    channels_last again.
    """
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps)  # (B, H, W, C)
    return y.permute(0, 3, 1, 2)
