"""Fused CPU inference ops shared by the networks' fast paths (oneDNN convolutions with post-ops).

Each function here replaces a short chain of plain PyTorch calls, its reference, and returns the same
values within float rounding (the oneDNN convolution accumulates in another order; the fused GELU is the
exact erf form). They are meant for CPU inference in float32, or in bfloat16, where the convolutions
take their weight and bias in the input's dtype (a cast each call, as autocast does): callers decide
with :func:`sisr.models._fastpath.fast_path_dtype` and :func:`fused_convs_available`, and run the
reference otherwise. None of them keeps state, so there is nothing to invalidate when the weights change: the
convolution's current ``weight`` and ``bias`` (or slices of them passed as `weight` / `bias`) are read on
every call.

References:

* ``conv2d(conv, x, unary="gelu")`` is ``F.gelu(conv(x))``; ``unary="none"`` is ``conv(x)``.
* ``conv2d_binary(conv, x, other, binary="mul")`` is ``conv(x) * other``, ``"add"`` is ``conv(x) + other``.
* ``conv2d_add_(out, conv, x)`` is ``out += conv(x)``, in place.
* ``layer_norm_channels(x, weight, bias, eps)`` is a layer norm over dim 1 of a (B, C, H, W) tensor.
* ``F.pixel_shuffle(F.conv2d(x, w, b, padding=2), r)`` with ``w, b = conv_shuffle_conv(up, last, r)`` is
  ``last(F.pixel_shuffle(up(x), r))`` for 3x3 convolutions `up` and `last` (padding 1), except in the
  outermost row and column of pixels on each side, where `last`'s zero padding of the shuffled map
  differs from the composite's padding of `x`; callers recompute those.

oneDNN picks its fastest kernels for channels_last inputs, and the outputs follow the input's layout, so a
network converts its features once to channels_last and stays there.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from sisr.ops import layer_norm_rows

Unary = Literal["none", "gelu"]
Binary = Literal["add", "mul"]


def fused_convs_available() -> bool:
    """Whether this torch build has oneDNN (mkldnn) and its pointwise-fused convolution ops."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _params(
    conv: nn.Conv2d, x: Tensor, weight: Tensor | None, bias: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """`weight` and `bias`, or the convolution's own, in the dtype of `x` (no copy when it is theirs)."""
    if weight is None:
        weight, bias = conv.weight, conv.bias
    return weight.to(x.dtype), None if bias is None else bias.to(x.dtype)


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
        x: (B, C_in, H, W) float32 or bfloat16 CPU input, channels_last for the fastest kernels.
        unary: Activation applied to the convolution's output.
        weight: Overrides ``conv.weight`` (e.g. the rows of one output half); `bias` then overrides
            ``conv.bias`` (None: no bias).
        bias: See `weight`.

    Returns:
        (B, C_out, H', W') in the layout of `x`.
    """
    padding, stride, dilation, groups = _geometry(conv)
    weight, bias = _params(conv, x, weight, bias)
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
    weight, bias = _params(conv, x, weight, bias)
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
    weight, bias = _params(conv, x, weight, bias)
    torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, weight, bias, padding, stride, dilation, groups, "add", None, None, [], None
    )
    return out


def layer_norm_channels(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Layer norm over the channels of (B, C, H, W) `x` by :func:`sisr.ops.layer_norm_rows` on its
    (B, H, W, C) view.

    For a channels_last `x` the view is contiguous, so this is one pass without copies (the compiled
    kernel where it is built, else ``F.layer_norm``), and the result is channels_last again.
    """
    y = layer_norm_rows(x.permute(0, 2, 3, 1), weight, bias, eps)  # (B, H, W, C)
    return y.permute(0, 3, 1, 2)


def _shuffled_conv3x3(weight: Tensor, r: int) -> Tensor:
    """The 3x3 convolution on ``y`` whose pixel shuffle by `r` is the 3x3 convolution `weight` (O, C, 3, 3)
    of ``pixel_shuffle(y, r)`` (both padding 1; bias aside): (O r^2, C r^2, 3, 3), pixel-shuffle order.

    Output pixel (r i + a, r j + b) reads shuffled pixels (r i + a + di, r j + b + dj), di, dj in
    {-1, 0, 1}: channel (c, a', b') of ``y`` at (i + si, j + sj), where r si + a' = a + di.
    """
    a = torch.arange(r).view(r, 1, 1, 1)
    a2 = torch.arange(r).view(1, r, 1, 1)
    shift = torch.arange(3).view(1, 1, 3, 1) - 1
    tap = torch.arange(3).view(1, 1, 1, 3) - 1
    select = (tap == r * shift + a2 - a).to(device=weight.device, dtype=weight.dtype)  # [a, a', s, d]
    k = torch.einsum("ocxy,apsx,bqty->oabcpqst", weight, select, select)  # (O, a, b, C, a', b', si, sj)
    out, channels = weight.shape[:2]
    return k.reshape(out * r * r, channels * r * r, 3, 3)


def conv_shuffle_conv(up: nn.Conv2d, last: nn.Conv2d, r: int) -> tuple[Tensor, Tensor]:
    """One 5x5 convolution (padding 2) for ``last(F.pixel_shuffle(up(x), r))``, before the shuffle.

    The chain is linear, so it folds into one convolution of `x` with ``out_channels(last) * r^2``
    outputs, the sub-pixel phases of `last`'s output in pixel-shuffle order: for an upsampler's
    ``conv -> shuffle -> conv_last`` that is 12 outputs instead of the ``4 * C`` of `up` and a
    full-resolution `last`, about 6x fewer multiply-adds. Exact within float rounding, except in the
    outermost pixels (see the module docstring).

    Args:
        up: 3x3 convolution, padding 1, ``C * r^2`` outputs (pixel-shuffle order).
        last: 3x3 convolution, padding 1, on the shuffled ``C`` channels.
        r: The pixel shuffle's factor, at least 2.

    Returns:
        The composite weight (O r^2, C_in, 5, 5) and bias (O r^2,).
    """
    for conv in (up, last):
        if conv.kernel_size != (3, 3) or tuple(conv.padding) != (1, 1) or conv.groups != 1:
            raise ValueError("conv_shuffle_conv needs 3x3 convolutions with padding 1")
    if r < 2:
        raise ValueError("conv_shuffle_conv needs r >= 2")
    k1 = _shuffled_conv3x3(last.weight, r)  # (P, C r^2, 3, 3) on up's output
    up_bias = up.bias if up.bias is not None else up.weight.new_zeros(up.out_channels)
    weight = up.weight.new_zeros(k1.shape[0], up.in_channels, 5, 5)
    for s in range(3):  # a 3x3 kernel after a 3x3 kernel: taps s + e of the composite, e < 3
        for t in range(3):
            weight[:, :, s : s + 3, t : t + 3] += torch.einsum("pk,kcef->pcef", k1[:, :, s, t], up.weight)
    bias = torch.einsum("pkst,k->p", k1, up_bias)
    if last.bias is not None:
        bias = bias + last.bias.repeat_interleave(r * r)
    return weight, bias
