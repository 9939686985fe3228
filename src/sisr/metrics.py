"""PSNR and SSIM as the super-resolution literature reports them.

The protocol of the SR papers (EDSR, RCAN, SwinIR, MMA, SeemoRe; BasicSR's ``calculate_psnr`` and
``calculate_ssim``):

- images are uint8 (SR outputs are rounded to uint8 before scoring), data range 255;
- ``crop_border = scale`` pixels are removed from every edge first;
- with ``y_channel=True`` only the luma of ITU-R BT.601 YCbCr is scored, as MATLAB's ``rgb2ycbcr`` on a
  ``[0, 1]`` image computes it: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (``R, G, B`` in ``[0, 1]``,
  ``Y`` in ``[16, 235]``), kept unrounded;
- SSIM is Wang et al.'s: an 11x11 Gaussian window with sigma 1.5, statistics over the 'valid' region
  only, ``K1 = 0.01``, ``K2 = 0.03``, no downsampling; for three channels the mean of the per-channel
  SSIMs.

Images are RGB, channels last (BasicSR's numpy metrics take BGR from cv2; only the Y weights care).
Everything here is numpy in float64; :func:`psnr_torch` and :func:`ssim_torch` are batched torch twins
for an evaluation loop.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sisr.errors import SisrError

__all__ = ["modcrop", "psnr", "psnr_torch", "rgb_to_y", "ssim", "ssim_torch"]

# BT.601 luma weights for R, G, B in [0, 255] -> Y in [16, 235] (MATLAB rgb2ycbcr, coefficients / 255).
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0

_DATA_RANGE = 255.0
_SSIM_C1 = (0.01 * _DATA_RANGE) ** 2
_SSIM_C2 = (0.03 * _DATA_RANGE) ** 2
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def _gaussian_1d(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product with itself is MATLAB's ``fspecial('gaussian')``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


_GAUSS = _gaussian_1d()


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an image's bottom and right edges so its height and width are multiples of ``scale``.

    This is how benchmark HR images are prepared before ``imresize(HR, 1 / scale)``.

    Args:
        img: Array ``(H, W)`` or ``(H, W, C)``, any dtype.
        scale: Positive integer upscaling factor.

    Returns:
        A view ``img[:H - H % scale, :W - W % scale]``.

    Raises:
        SisrError: If ``scale`` is not a positive int, ``img`` is not 2-D or 3-D, or the image is
            smaller than ``scale``.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise SisrError(f"modcrop: scale must be a positive integer, got {scale!r}")
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise SisrError(f"modcrop: expected an (H, W) or (H, W, C) numpy array, got {_describe(img)}")
    height, width = img.shape[:2]
    if height < scale or width < scale:
        raise SisrError(f"modcrop: image of size {height}x{width} is smaller than scale {scale}")
    return img[: height - height % scale, : width - width % scale]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 RGB image, as MATLAB's ``rgb2ycbcr(im2double(img)) * 255``, unrounded.

    Args:
        img: uint8 array ``(H, W, 3)`` in RGB order.

    Returns:
        float64 array ``(H, W)`` with values in ``[16, 235]``.

    Raises:
        SisrError: If ``img`` is not a uint8 ``(H, W, 3)`` array.
    """
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise SisrError(f"rgb_to_y: expected an (H, W, 3) RGB array, got {_describe(img)}")
    if img.dtype != np.uint8:
        raise SisrError(f"rgb_to_y: expected a uint8 image, got dtype {img.dtype}")
    return img.astype(np.float64) @ np.asarray(_Y_WEIGHTS) + _Y_OFFSET


def _prepare(
    name: str, img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair, crop it, optionally take Y; return float64 ``(H, W, C)`` arrays."""
    for label, arr in (("img", img), ("ref", ref)):
        if not isinstance(arr, np.ndarray):
            raise SisrError(f"{name}: {label} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.uint8:
            raise SisrError(f"{name}: {label} must be uint8 (data range 255), got dtype {arr.dtype}")
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
            raise SisrError(f"{name}: {label} must be (H, W), (H, W, 1) or (H, W, 3), got {arr.shape}")
    if img.shape != ref.shape:
        raise SisrError(f"{name}: image shapes differ: img {img.shape} vs ref {ref.shape}")
    _check_crop(name, crop_border, img.shape[0], img.shape[1])
    if crop_border > 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[crop_border:-crop_border, crop_border:-crop_border]
    if img.ndim == 2:
        img, ref = img[..., None], ref[..., None]
    if y_channel and img.shape[2] == 3:
        return rgb_to_y(img)[..., None], rgb_to_y(ref)[..., None]
    # Gray images are their own luma: y_channel changes nothing for them.
    return img.astype(np.float64), ref.astype(np.float64)


def _check_crop(name: str, crop_border: int, height: int, width: int) -> None:
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise SisrError(f"{name}: crop_border must be a non-negative integer, got {crop_border!r}")
    if 2 * crop_border >= min(height, width):
        raise SisrError(f"{name}: crop_border {crop_border} leaves nothing of a {height}x{width} image")


def psnr(img: np.ndarray, ref: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(255^2 / MSE)``, as BasicSR's ``calculate_psnr``.

    For colour images without ``y_channel`` the MSE is over all pixels and channels together.

    Args:
        img: uint8 image ``(H, W, 3)`` RGB, ``(H, W, 1)`` or ``(H, W)`` gray (e.g. the SR output).
        ref: uint8 image of the same shape (the ground truth). PSNR is symmetric in the pair.
        crop_border: Pixels removed from each edge first; the benchmarks use the scale factor.
        y_channel: Score only the BT.601 luma (see :func:`rgb_to_y`); no effect on gray images.

    Returns:
        PSNR in dB; ``inf`` if the (cropped) images are identical.

    Raises:
        SisrError: On non-uint8 input, mismatched or unsupported shapes, or a bad ``crop_border``.
    """
    a, b = _prepare("psnr", img, ref, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(_DATA_RANGE * _DATA_RANGE / mse))


def _filter_valid(x: np.ndarray) -> np.ndarray:
    """Correlate a ``(H, W)`` array with the 11x11 Gaussian, 'valid' region only -> ``(H-10, W-10)``."""
    n = _SSIM_WINDOW
    height, width = x.shape
    rows = sum(_GAUSS[k] * x[k : height - n + 1 + k] for k in range(n))  # (H-10, W)
    return sum(_GAUSS[k] * rows[:, k : width - n + 1 + k] for k in range(n))  # (H-10, W-10)


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the SSIM map of two float64 ``(H, W)`` channels in ``[0, 255]``."""
    mu_a = _filter_valid(a)
    mu_b = _filter_valid(b)
    var_a = _filter_valid(a * a) - mu_a * mu_a
    var_b = _filter_valid(b * b) - mu_b * mu_b
    cov = _filter_valid(a * b) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return float(np.mean(num / den))


def ssim(img: np.ndarray, ref: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity (Wang et al. 2004), as BasicSR's ``calculate_ssim`` and the MATLAB code.

    Gaussian window 11x11 with sigma 1.5, statistics only where the window fits ('valid'), data range
    255, no automatic downsampling. Colour images without ``y_channel`` give the mean of the three
    per-channel SSIMs.

    Args:
        img: uint8 image ``(H, W, 3)`` RGB, ``(H, W, 1)`` or ``(H, W)`` gray.
        ref: uint8 image of the same shape. SSIM is symmetric in the pair.
        crop_border: Pixels removed from each edge first; at least 11x11 pixels must remain.
        y_channel: Score only the BT.601 luma (see :func:`rgb_to_y`); no effect on gray images.

    Returns:
        SSIM, at most 1 (exactly 1 for identical images).

    Raises:
        SisrError: On non-uint8 input, mismatched or unsupported shapes, a bad ``crop_border``, or
            fewer than 11x11 pixels left after cropping.
    """
    a, b = _prepare("ssim", img, ref, crop_border, y_channel)
    if min(a.shape[0], a.shape[1]) < _SSIM_WINDOW:
        raise SisrError(f"ssim: needs at least 11x11 pixels after cropping, got {a.shape[0]}x{a.shape[1]}")
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


# ---------------------------------------------------------------------------------------------------
# Batched torch versions, for scoring a whole batch of SR outputs at once.


def _prepare_torch(
    name: str, img: torch.Tensor, ref: torch.Tensor, crop_border: int, y_channel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch pair, crop it, optionally take Y; return float64 ``(B, C, H, W)`` tensors."""
    for label, t in (("img", img), ("ref", ref)):
        if not isinstance(t, torch.Tensor):
            raise SisrError(f"{name}: {label} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.uint8:
            raise SisrError(f"{name}: {label} must be uint8 (data range 255), got dtype {t.dtype}")
        if t.ndim != 4 or t.shape[1] not in (1, 3):
            raise SisrError(f"{name}: {label} must be (B, 1 or 3, H, W), got {tuple(t.shape)}")
    if img.shape != ref.shape:
        raise SisrError(f"{name}: image shapes differ: img {tuple(img.shape)} vs ref {tuple(ref.shape)}")
    _check_crop(name, crop_border, img.shape[2], img.shape[3])
    if crop_border > 0:
        img = img[..., crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[..., crop_border:-crop_border, crop_border:-crop_border]
    a, b = img.to(torch.float64), ref.to(torch.float64)
    if y_channel and a.shape[1] == 3:
        w = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=a.device).view(1, 3, 1, 1)
        a = (a * w).sum(dim=1, keepdim=True) + _Y_OFFSET  # (B, 1, H, W)
        b = (b * w).sum(dim=1, keepdim=True) + _Y_OFFSET
    return a, b


def psnr_torch(
    img: torch.Tensor, ref: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False
) -> torch.Tensor:
    """Per-image PSNR of a batch; the same numbers as :func:`psnr` on each pair.

    Args:
        img: uint8 tensor ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` gray.
        ref: uint8 tensor of the same shape.
        crop_border: Pixels removed from each edge first.
        y_channel: Score only the BT.601 luma; no effect on gray images.

    Returns:
        float64 tensor ``(B,)`` in dB, ``inf`` where a pair is identical.

    Raises:
        SisrError: On non-uint8 input, mismatched or unsupported shapes, or a bad ``crop_border``.
    """
    a, b = _prepare_torch("psnr_torch", img, ref, crop_border, y_channel)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))  # (B,)
    # log10(x / 0) = inf, which is the documented value for identical images.
    return 10.0 * torch.log10(_DATA_RANGE * _DATA_RANGE / mse)


def ssim_torch(
    img: torch.Tensor, ref: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False
) -> torch.Tensor:
    """Per-image SSIM of a batch; the same numbers as :func:`ssim` on each pair.

    Args:
        img: uint8 tensor ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` gray.
        ref: uint8 tensor of the same shape.
        crop_border: Pixels removed from each edge first; at least 11x11 pixels must remain.
        y_channel: Score only the BT.601 luma; no effect on gray images.

    Returns:
        float64 tensor ``(B,)``: per image, the mean over channels of the mean SSIM map.

    Raises:
        SisrError: On non-uint8 input, mismatched or unsupported shapes, a bad ``crop_border``, or
            fewer than 11x11 pixels left after cropping.
    """
    a, b = _prepare_torch("ssim_torch", img, ref, crop_border, y_channel)
    if min(a.shape[2], a.shape[3]) < _SSIM_WINDOW:
        raise SisrError(
            f"ssim_torch: needs at least 11x11 pixels after cropping, got {a.shape[2]}x{a.shape[3]}"
        )
    batch, channels = a.shape[:2]
    g = torch.from_numpy(_GAUSS).to(a.device)
    g_rows = g.view(1, 1, _SSIM_WINDOW, 1)
    g_cols = g.view(1, 1, 1, _SSIM_WINDOW)

    def blur(x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B*C, 1, H, W) -> separable valid correlation -> (B, C, H-10, W-10)
        y = F.conv2d(F.conv2d(x.reshape(batch * channels, 1, *x.shape[2:]), g_rows), g_cols)
        return y.view(batch, channels, *y.shape[2:])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    # Mean over each channel's map, then over channels: equal-size maps, so one mean over (C, H, W).
    return (num / den).mean(dim=(1, 2, 3))


def _describe(obj: object) -> str:
    shape = getattr(obj, "shape", None)
    if shape is None:
        return type(obj).__name__
    return f"{type(obj).__name__} of shape {tuple(shape)}"
