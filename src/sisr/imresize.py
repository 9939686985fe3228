"""MATLAB-compatible bicubic ``imresize``, the degradation behind the SR benchmarks' LR images.

The benchmark LR inputs (Set5, Set14, B100, Urban100, Manga109, DIV2K) are made with MATLAB's
``imresize(HR, 1/scale, 'bicubic')``. That is not the bicubic of PIL, OpenCV or ``torch.nn.functional
.interpolate``: MATLAB widens the cubic kernel by ``1/scale`` when shrinking (antialiasing), maps pixel
centres with ``u = x / scale + (1 - 1 / scale) / 2`` and mirrors the image at its borders ("symmetric"
padding, the edge pixel repeated). This module reproduces it, agreeing with BasicSR's
``basicsr/utils/matlab_functions.imresize`` to float32 precision.

Resizing is separable and linear, so each axis is a dense ``(out, in)`` matrix whose rows hold the
kernel weights; the border mirroring is folded into the matrix by adding the weights of mirrored taps
onto the in-range pixels they copy. Resizing is then two matrix products, in numpy or in torch.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch

from sisr.errors import SisrError

__all__ = ["bicubic_lr", "imresize", "imresize_torch", "resize_matrix"]

# Width (in input pixels, at scale >= 1) of the support of the cubic kernel: |x| < 2.
_KERNEL_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, MATLAB's ``cubic``; zero for |x| > 2."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
    outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return np.where(ax <= 1.0, inner, np.where(ax <= 2.0, outer, 0.0))


@functools.lru_cache(maxsize=128)
def _resize_matrix_cached(in_length: int, out_length: int, scale: float, antialiasing: bool) -> np.ndarray:
    shrink_aa = scale < 1.0 and antialiasing
    # When shrinking with antialiasing the kernel is stretched by 1/scale (and its height scaled by
    # `scale`), so it low-passes as it interpolates.
    kernel_width = _KERNEL_WIDTH / scale if shrink_aa else _KERNEL_WIDTH

    # 1-based output coordinates and their centres in input space, as MATLAB's contributions().
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # (out,)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2  # one spare tap each side; its weight is zero
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # (out, taps), 1-based
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if shrink_aa else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)  # each output pixel is a weighted average

    # Symmetric padding: index i <= 0 reads pixel 1 - i, index i > n reads 2n + 1 - i; MATLAB indexes
    # into [1..n, n..1] modulo 2n, which also covers taps more than n pixels outside.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    cols = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]  # (out, taps), 0-based
    rows = np.broadcast_to(np.arange(out_length)[:, None], cols.shape)
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    np.add.at(matrix, (rows, cols), weights)
    matrix.flags.writeable = False  # shared through the cache
    return matrix


def resize_matrix(in_length: int, out_length: int, scale: float, *, antialiasing: bool = True) -> np.ndarray:
    """The ``(out_length, in_length)`` float64 matrix of MATLAB's bicubic resize along one axis.

    Args:
        in_length: Number of input pixels along the axis.
        out_length: Number of output pixels, normally ``ceil(in_length * scale)``.
        scale: Resize factor, ``< 1`` to shrink.
        antialiasing: Stretch the kernel by ``1 / scale`` when shrinking, as MATLAB does by default.

    Returns:
        A read-only array ``M`` with ``out = M @ in`` along that axis; every row sums to 1.
    """
    if in_length < 1 or out_length < 1:
        raise SisrError(f"imresize: lengths must be positive, got in={in_length}, out={out_length}")
    if not (math.isfinite(scale) and scale > 0):
        raise SisrError(f"imresize: scale must be a positive finite number, got {scale!r}")
    return _resize_matrix_cached(int(in_length), int(out_length), float(scale), bool(antialiasing))


def _output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    if (
        isinstance(scale, bool)
        or not isinstance(scale, numbers.Real)
        or not (math.isfinite(scale) and scale > 0)
    ):
        raise SisrError(f"imresize: scale must be a positive finite number, got {scale!r}")
    return math.ceil(height * float(scale)), math.ceil(width * float(scale))


def imresize(img: np.ndarray, scale: float, *, antialiasing: bool = True) -> np.ndarray:
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')`` for a float image.

    Values are not clipped (bicubic overshoots slightly at edges; MATLAB does not clip floats either).
    The arithmetic is float64; the result has the input's dtype.

    Args:
        img: float32 or float64 array, ``(H, W, C)`` (channels last, e.g. RGB) or ``(H, W)``, usually in
            ``[0, 1]``.
        scale: Resize factor for both axes, e.g. ``1 / 4`` to make a x4 LR image. The output is
            ``(ceil(H * scale), ceil(W * scale))``.
        antialiasing: Widen the kernel when shrinking (MATLAB's default).

    Returns:
        The resized array, same dtype and number of dimensions as ``img``.

    Raises:
        SisrError: If ``img`` is not a 2-D or 3-D floating-point array or ``scale`` is not positive.
    """
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise SisrError(f"imresize: expected an (H, W) or (H, W, C) numpy array, got {_describe(img)}")
    if img.dtype not in (np.float32, np.float64):
        raise SisrError(
            f"imresize: expected a float32 or float64 image in [0, 1], got dtype {img.dtype}; "
            "convert uint8 images with img.astype(np.float32) / 255"
        )
    height, width = img.shape[:2]
    out_h, out_w = _output_size(height, width, scale)
    m_h = resize_matrix(height, out_h, scale, antialiasing=antialiasing)  # (out_h, H)
    m_w = resize_matrix(width, out_w, scale, antialiasing=antialiasing)  # (out_w, W)
    x = img.astype(np.float64)
    # Height first, then width, as MATLAB does when both axes have the same scale.
    out = np.tensordot(m_h, x, axes=(1, 0))  # (out_h, W[, C])
    out = np.moveaxis(np.tensordot(m_w, out, axes=(1, 1)), 0, 1)  # (out_h, out_w[, C])
    return np.ascontiguousarray(out, dtype=img.dtype)


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR image of the SR benchmarks: mod-crop, then MATLAB's ``imresize(hr, 1 / scale, 'bicubic')``.

    Every LR image made in sisr comes from here (the held-out photographs, ``sisr prepare lr``, the LR
    that ``sisr evaluate`` makes for HR-only folders, and the patches of GT-only training sets).

    Args:
        hr: ``(H, W)`` or ``(H, W, C)`` image. ``uint8`` / ``uint16`` pixels are resized in float64 as
            MATLAB's ``im2double`` gives them and rounded back like ``im2uint8`` / ``im2uint16`` (half away
            from zero, saturated), which is what the published LR files hold. Float pixels (in ``[0, 1]``)
            are resized as they are and neither rounded nor clipped (MMA's LR made on the fly).
        scale: Integer downscaling factor; ``H`` and ``W`` are first cropped to multiples of it (bottom
            rows and right columns dropped).

    Returns:
        ``(H // scale, W // scale[, C])``, of the input's dtype.

    Raises:
        SisrError: A bad scale or dtype, or an image smaller than ``scale`` along an axis.
    """
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise SisrError(f"bicubic_lr: scale must be an integer >= 1, got {scale!r}")
    if not isinstance(hr, np.ndarray) or hr.ndim not in (2, 3):
        raise SisrError(f"bicubic_lr: expected an (H, W) or (H, W, C) numpy array, got {_describe(hr)}")
    s = int(scale)
    height, width = hr.shape[0] - hr.shape[0] % s, hr.shape[1] - hr.shape[1] % s
    if height == 0 or width == 0:
        raise SisrError(f"image of {hr.shape[0]}x{hr.shape[1]} pixels is smaller than scale {s}")
    hr = hr[:height, :width]  # mod-crop
    if hr.dtype in (np.float32, np.float64):
        return imresize(hr, 1.0 / s)
    if hr.dtype not in (np.uint8, np.uint16):
        raise SisrError(f"bicubic_lr: expected uint8, uint16 or float pixels, got dtype {hr.dtype}")
    top = float(np.iinfo(hr.dtype).max)
    lr = imresize(hr.astype(np.float64) / top, 1.0 / s)
    # MATLAB's im2uint8 / im2uint16: round half away from zero, saturate.
    return np.clip(np.floor(lr * top + 0.5), 0.0, top).astype(hr.dtype)


def imresize_torch(x: torch.Tensor, scale: float, *, antialiasing: bool = True) -> torch.Tensor:
    """Batched MATLAB bicubic resize of channels-first tensors, the same as :func:`imresize`.

    Meant for making LR patches on the fly in data loading. The two resize matrices are built in float64
    and applied in ``x``'s dtype on ``x``'s device, so float32 results agree with :func:`imresize` to
    float32 rounding.

    Args:
        x: Floating tensor ``(C, H, W)`` or ``(B, C, H, W)``, usually in ``[0, 1]``.
        scale: Resize factor for both spatial axes; output size ``(ceil(H * scale), ceil(W * scale))``.
        antialiasing: Widen the kernel when shrinking (MATLAB's default).

    Returns:
        Tensor of shape ``(..., ceil(H * scale), ceil(W * scale))``, same dtype and device as ``x``.

    Raises:
        SisrError: If ``x`` is not a 3-D or 4-D floating-point tensor or ``scale`` is not positive.
    """
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        raise SisrError(f"imresize_torch: expected a (C, H, W) or (B, C, H, W) tensor, got {_describe(x)}")
    if not x.is_floating_point():
        raise SisrError(f"imresize_torch: expected a floating-point tensor in [0, 1], got dtype {x.dtype}")
    height, width = x.shape[-2:]
    out_h, out_w = _output_size(height, width, scale)
    m_h = torch.from_numpy(resize_matrix(height, out_h, scale, antialiasing=antialiasing).copy())
    m_w = torch.from_numpy(resize_matrix(width, out_w, scale, antialiasing=antialiasing).copy())
    m_h = m_h.to(dtype=x.dtype, device=x.device)  # (out_h, H)
    m_w = m_w.to(dtype=x.dtype, device=x.device)  # (out_w, W)
    # (out_h, H) @ (..., H, W) @ (W, out_w) -> (..., out_h, out_w)
    return torch.matmul(torch.matmul(m_h, x), m_w.T)


def _describe(obj: object) -> str:
    shape = getattr(obj, "shape", None)
    if shape is None:
        return type(obj).__name__
    return f"{type(obj).__name__} of shape {tuple(shape)}"
