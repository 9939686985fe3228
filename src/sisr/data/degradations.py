"""Real-world degradations made on the fly: Real-ESRGAN's "second-order" blur, resize, noise and JPEG.

Wang, Xie, Dong and Shan, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic
Data", ICCV Workshops 2021. Real-ESRGAN draws the blur kernels in its dataset (``RealESRGANDataset``) and
applies the rest on the GPU in its model (``RealESRNetModel.feed_data``). Here the whole chain runs on the
CPU, per sample, in the DataLoader workers: :func:`degrade` turns one HR patch into its LR input.

* The deterministic pieces equal BasicSR's ``basicsr/data/degradations.py`` and
  ``basicsr/utils/img_process_util.py`` for the same parameters (checked against fixtures made with
  BasicSR, see ``tests/fixtures/degradations/README.md``): the kernels of every type and the sinc filter
  (:func:`bivariate_gaussian`, :func:`bivariate_generalized_gaussian`, :func:`bivariate_plateau`,
  :func:`circular_lowpass_kernel`), :func:`filter2d`, :func:`resize`, the noise from a given generator
  state (:func:`gaussian_noise`, :func:`poisson_noise`, BasicSR's ``*_pt`` functions that Real-ESRGAN's
  model uses) and :func:`usm_sharp` (BasicSR's ``USMSharp``, as separable convolutions).
* JPEG goes through Pillow's encoder at the drawn quality (:func:`jpeg`) instead of Real-ESRGAN's
  differentiable ``DiffJPEG``; the image is rounded to 8 bits first, as a real JPEG file is.
* Every random draw comes from the sample's own ``numpy.random.Generator`` (and a ``torch.Generator``
  seeded from it for the noise), so a run is reproducible and resumes bit for bit
  (:mod:`sisr.data.loaders`).
* Real-ESRGAN degrades a 400x400 crop and then crops the training patch from it; here the training patch
  itself is degraded, which changes only the reflected borders of the blurs and costs a fraction of it.
  Kernel sizes are drawn from the odd sizes 7 ... ``blur_kernel_size`` (Real-ESRGAN reads the option but
  always uses 7 ... 21, which is what its value 21 gives here).

The settings (:class:`Degradation`) use Real-ESRGAN's option names and ranges; their defaults are the
values of Real-ESRGAN's ``options/train_realesrnet_x4plus.yml``.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sisr.errors import SisrError

__all__ = [
    "KERNEL_TYPES",
    "Degradation",
    "KernelType",
    "bessel_j1",
    "bivariate_gaussian",
    "bivariate_generalized_gaussian",
    "bivariate_plateau",
    "circular_lowpass_kernel",
    "degrade",
    "filter2d",
    "gaussian_noise",
    "jpeg",
    "mesh_grid",
    "poisson_noise",
    "resize",
    "usm_sharp",
]

KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_TYPES: tuple[KernelType, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
ResizeMode = Literal["area", "bilinear", "bicubic"]
_RESIZE_MODES: tuple[ResizeMode, ...] = ("area", "bilinear", "bicubic")
_MIN_KERNEL = 7  # the smallest kernel Real-ESRGAN draws


# ---------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Degradation:
    """The ``degradation`` block of a training dataset: Real-ESRGAN's options, with its x4plus recipe.

    Stage 1 blurs, resizes, adds noise and compresses; stage 2 does it again (its blur with probability
    ``second_blur_prob``), then resizes to the LR size with the final sinc filter (probability
    ``final_sinc_prob``) and JPEG, in a random order of the two. Ranges are ``[low, high]``; probabilities
    in ``[0, 1]``; ``resize_prob`` is (up, down, keep); noise sigmas are on the 0-255 scale.
    """

    # Stage 1 kernel (Real-ESRGAN's dataset options).
    blur_kernel_size: int = 21
    kernel_list: tuple[KernelType, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    # Stage 2 kernel.
    blur_kernel_size2: int = 21
    kernel_list2: tuple[KernelType, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    final_sinc_prob: float = 0.8
    # Stage 1 resize, noise and JPEG (Real-ESRGAN's model options).
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # Stage 2.
    second_blur_prob: float = 0.8
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # Sharpen the GT with unsharp masking before degrading it (Real-ESRNet does; the loss then sees it).
    gt_usm: bool = True
    # sisr's own, not Real-ESRGAN's: antialias the bilinear and bicubic downscales (torch's
    # ``antialias=True``, as Pillow and MATLAB's imresize do). Real-ESRGAN's F.interpolate calls alias, while
    # photos from the web were mostly shrunk by software that antialiases.
    resize_antialias: bool = False

    def _resolve(self, path: str, given: set[str]) -> Degradation:  # called by sisr.config.from_dict
        self.check(path)
        return self

    def check(self, path: str) -> None:
        """Raises a one-line ``SisrError`` naming the key path of the first invalid setting."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            where = f"{path}.{f.name}"
            if f.name.startswith("blur_kernel_size"):
                if value < _MIN_KERNEL or value % 2 == 0:
                    raise SisrError(f"{where}: must be an odd integer >= {_MIN_KERNEL}, got {value}")
            elif f.name.endswith("_prob") or f.name.endswith("_prob2"):
                if f.name.startswith(("kernel_prob", "resize_prob")):
                    self._check_choice(where, value, f.name)
                elif not 0.0 <= value <= 1.0:
                    raise SisrError(f"{where}: must be a probability in [0, 1], got {value}")
            elif f.name.startswith(("kernel_list",)):
                if not value:
                    raise SisrError(f"{where}: must name at least one kernel type")
            elif isinstance(value, tuple) and len(value) == 2:
                low, high = value
                if low > high:
                    raise SisrError(f"{where}: must be [low, high] with low <= high, got {list(value)}")
                minimum = self._minimum(f.name)
                if low < minimum:
                    raise SisrError(f"{where}: values must be >= {minimum:g}, got {list(value)}")
                if f.name.startswith("jpeg_range") and high > 100:
                    raise SisrError(f"{where}: JPEG qualities are at most 100, got {list(value)}")
        for stage in ("", "2"):
            kinds, probs = getattr(self, f"kernel_list{stage}"), getattr(self, f"kernel_prob{stage}")
            if len(kinds) != len(probs):
                raise SisrError(
                    f"{path}.kernel_prob{stage}: one probability per kernel_list{stage} entry: "
                    f"{len(probs)} for {len(kinds)}"
                )

    @staticmethod
    def _check_choice(where: str, probs: tuple[float, ...], name: str) -> None:
        if any(not 0.0 <= p for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            what = "(up, down, keep) " if name.startswith("resize") else ""
            raise SisrError(f"{where}: {what}probabilities must be >= 0 and sum to 1, got {list(probs)}")

    @staticmethod
    def _minimum(name: str) -> float:
        if name.startswith("jpeg_range"):
            return 1.0
        if name.startswith(("blur_sigma", "resize_range", "betag", "betap")):
            return 1e-6  # > 0
        return 0.0


# ---------------------------------------------------------------------------------------------------------
# Kernels (numpy float64, as BasicSR)


def mesh_grid(kernel_size: int) -> np.ndarray:
    """``(K, K, 2)`` grid of (x, y) offsets from the centre of an odd K x K kernel."""
    ax = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def _sigma_matrix(sig_x: float, sig_y: float, theta: float, isotropic: bool) -> np.ndarray:
    if isotropic:
        return np.array([[sig_x**2, 0.0], [0.0, sig_x**2]])
    d = np.array([[sig_x**2, 0.0], [0.0, sig_y**2]])
    u = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return np.dot(u, np.dot(d, u.T))


def _quadratic(kernel_size: int, sig_x: float, sig_y: float, theta: float, isotropic: bool) -> np.ndarray:
    """``(K, K)`` values of ``g^T Sigma^-1 g`` over the grid."""
    grid = mesh_grid(kernel_size)
    inverse = np.linalg.inv(_sigma_matrix(sig_x, sig_y, theta, isotropic))
    return np.sum(np.dot(grid, inverse) * grid, 2)


def bivariate_gaussian(
    kernel_size: int, sig_x: float, sig_y: float, theta: float, *, isotropic: bool
) -> np.ndarray:
    """Normalised (an)isotropic Gaussian kernel; `theta` rotates it (radians). Isotropic uses `sig_x`."""
    kernel = np.exp(-0.5 * _quadratic(kernel_size, sig_x, sig_y, theta, isotropic))
    return kernel / np.sum(kernel)


def bivariate_generalized_gaussian(
    kernel_size: int, sig_x: float, sig_y: float, theta: float, beta: float, *, isotropic: bool
) -> np.ndarray:
    """Normalised generalised Gaussian ``exp(-0.5 q^beta)`` (beta = 1: the Gaussian)."""
    kernel = np.exp(-0.5 * np.power(_quadratic(kernel_size, sig_x, sig_y, theta, isotropic), beta))
    return kernel / np.sum(kernel)


def bivariate_plateau(
    kernel_size: int, sig_x: float, sig_y: float, theta: float, beta: float, *, isotropic: bool
) -> np.ndarray:
    """Normalised plateau kernel ``1 / (1 + q^beta)``."""
    kernel = np.reciprocal(np.power(_quadratic(kernel_size, sig_x, sig_y, theta, isotropic), beta) + 1)
    return kernel / np.sum(kernel)


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """The Bessel function of the first kind of order 1, elementwise (float64).

    From Bessel's integral ``J1(x) = 1/(2 pi) int_0^{2 pi} cos(t - x sin t) dt``: the integrand is
    periodic and analytic, so the trapezoidal rule converges geometrically; 160 points give machine
    precision for ``|x| < 60`` (a 21x21 sinc kernel needs ``x <= pi * 10 sqrt(2)``). numpy has no J1, and
    this keeps scipy out of the dependencies.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.any(np.abs(x) > 60):
        raise ValueError("bessel_j1 is accurate for |x| <= 60 only")
    t = np.arange(160) * (2 * np.pi / 160)
    return np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1)


def circular_lowpass_kernel(cutoff: float, kernel_size: int, *, pad_to: int = 0) -> np.ndarray:
    """Normalised 2-D sinc (circular low-pass) kernel with `cutoff` in radians, zero-padded to `pad_to`."""
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    centre = (kernel_size - 1) / 2
    y, x = np.mgrid[:kernel_size, :kernel_size].astype(np.float64)
    r = np.sqrt((y - centre) ** 2 + (x - centre) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * bessel_j1(cutoff * r) / (2 * np.pi * r)
    c = (kernel_size - 1) // 2
    kernel[c, c] = cutoff**2 / (4 * np.pi)
    kernel = kernel / np.sum(kernel)
    if pad_to > kernel_size:
        pad = (pad_to - kernel_size) // 2
        kernel = np.pad(kernel, ((pad, pad), (pad, pad)))
    return kernel


def _random_kernel(
    rng: np.random.Generator,
    *,
    max_size: int,
    kinds: tuple[KernelType, ...],
    probs: tuple[float, ...],
    sinc_prob: float,
    sigma: tuple[float, float],
    betag: tuple[float, float],
    betap: tuple[float, float],
) -> np.ndarray:
    """One stage's blur kernel, drawn as Real-ESRGAN's dataset does (sizes 7 ... `max_size`)."""
    size = int(rng.choice(np.arange(_MIN_KERNEL, max_size + 1, 2)))
    if rng.random() < sinc_prob:  # Real-ESRGAN's cutoff ranges for kernels of 7 ... 21
        cutoff = rng.uniform(np.pi / 3, np.pi) if size < 13 else rng.uniform(np.pi / 5, np.pi)
        return circular_lowpass_kernel(cutoff, size)
    p = np.asarray(probs, dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    isotropic = kind.endswith("iso") and not kind.endswith("aniso")
    sig_x = rng.uniform(*sigma)
    sig_y, theta = (sig_x, 0.0) if isotropic else (rng.uniform(*sigma), rng.uniform(-np.pi, np.pi))
    if kind in ("iso", "aniso"):
        return bivariate_gaussian(size, sig_x, sig_y, theta, isotropic=isotropic)
    low, high = betag if kind.startswith("generalized") else betap
    # BasicSR: half of the draws below beta = 1 (sharper than Gaussian), half above.
    beta = rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high)
    if kind.startswith("generalized"):
        return bivariate_generalized_gaussian(size, sig_x, sig_y, theta, beta, isotropic=isotropic)
    return bivariate_plateau(size, sig_x, sig_y, theta, beta, isotropic=isotropic)


# ---------------------------------------------------------------------------------------------------------
# Operations on (B, C, H, W) float32 tensors in [0, 1]


def _pad(img: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    # Reflection needs the pad below the size; a patch shrunk far by a random resize falls back to
    # replicating its edge.
    left, right, top, bottom = pads
    fits = max(left, right) < img.shape[-1] and max(top, bottom) < img.shape[-2]
    return F.pad(img, pads, mode="reflect" if fits else "replicate")


def filter2d(img: Tensor, kernel: np.ndarray | Tensor) -> Tensor:
    """Convolves every channel with an odd ``(k, k)`` kernel, reflect-padded (BasicSR's ``filter2D``)."""
    kernel = torch.as_tensor(kernel, dtype=img.dtype)
    k = kernel.shape[-1]
    if k % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {k}")
    b, c, h, w = img.shape
    padded = _pad(img, (k // 2,) * 4)
    out = F.conv2d(padded.reshape(b * c, 1, *padded.shape[-2:]), kernel.reshape(1, 1, k, k))
    return out.reshape(b, c, h, w)


def resize(
    img: Tensor,
    *,
    mode: ResizeMode,
    size: tuple[int, int] | None = None,
    scale_factor: float | None = None,
    antialias: bool = False,
) -> Tensor:
    """``F.interpolate`` as Real-ESRGAN calls it (``align_corners=False``, no antialiasing by default).

    Args:
        img: ``(B, C, H, W)``.
        mode: The interpolation.
        size: The output ``(H, W)``, or
        scale_factor: the factor for both sides.
        antialias: Antialias bilinear and bicubic downscales (``area`` averages anyway).
    """
    antialias = antialias and mode != "area"
    return F.interpolate(img, size=size, scale_factor=scale_factor, mode=mode, antialias=antialias)


def gaussian_noise(img: Tensor, *, sigma: float, gray: bool, generator: torch.Generator) -> Tensor:
    """Gaussian noise of std `sigma` / 255 for a ``(1, C, H, W)`` image; gray: one field for all channels.

    Draws what BasicSR's ``generate_gaussian_noise_pt`` draws, in its order (the gray field first, then
    the colour noise it always draws), so that the same generator state gives the same noise.
    """
    _, c, h, w = img.shape
    gray_noise = None
    if gray:
        gray_noise = torch.randn(h, w, dtype=img.dtype, generator=generator) * sigma / 255.0
    noise = torch.randn(1, c, h, w, dtype=img.dtype, generator=generator) * sigma / 255.0
    return noise if gray_noise is None else gray_noise.expand(1, c, h, w).clone()


def _poisson(img: Tensor, generator: torch.Generator) -> Tensor:
    # Count the distinct 8-bit levels as BasicSR does (len(torch.unique)), with a histogram: no sort.
    codes = torch.clamp((img * 255.0).round(), 0, 255)
    img = codes / 255.0
    distinct = int(torch.bincount(codes.flatten().to(torch.int64), minlength=256).count_nonzero())
    levels = 2 ** math.ceil(math.log2(distinct))
    return torch.poisson(img * levels, generator=generator) / levels - img


def poisson_noise(img: Tensor, *, scale: float, gray: bool, generator: torch.Generator) -> Tensor:
    """Shot noise of a ``(1, 3, H, W)`` image times `scale` (BasicSR's ``generate_poisson_noise_pt``)."""
    gray_noise = None
    if gray:  # torchvision's rgb_to_grayscale weights, as BasicSR
        r, g, b = img.unbind(dim=1)
        luma = (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype)[:, None]
        gray_noise = _poisson(luma, generator).expand_as(img)
    noise = _poisson(img, generator)  # drawn in any case, as BasicSR does
    return (noise if gray_noise is None else gray_noise) * scale


def jpeg(img: Tensor, *, quality: int) -> Tensor:
    """JPEG-compresses a ``(1, 3, H, W)`` image with Pillow at `quality` (rounded to 8 bits first)."""
    from PIL import Image

    pixels = torch.clamp((img[0] * 255.0).round(), 0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1)[None].to(img.dtype) / 255.0


def _usm_kernel(radius: int) -> Tensor:
    # cv2.getGaussianKernel(radius, 0): sigma from the size, normalised in float64.
    sigma = 0.3 * ((radius - 1) * 0.5 - 1) + 0.8
    x = np.arange(radius) - (radius - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return torch.from_numpy(g / g.sum()).float()


def usm_sharp(img: Tensor, *, weight: float = 0.5, radius: int = 50, threshold: float = 10) -> Tensor:
    """Unsharp masking, BasicSR's ``USMSharp`` (its Gaussian kernel applied as two 1-D passes)."""
    if radius % 2 == 0:
        radius += 1
    g = _usm_kernel(radius)

    def blur(x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = radius // 2
        flat = _pad(x, (p, p, p, p)).reshape(b * c, 1, h + 2 * p, w + 2 * p)
        flat = F.conv2d(flat, g.reshape(1, 1, 1, radius))  # along W
        flat = F.conv2d(flat, g.reshape(1, 1, radius, 1))  # along H
        return flat.reshape(b, c, h, w)

    residual = img - blur(img)
    mask = (torch.abs(residual) * 255 > threshold).to(img.dtype)
    soft_mask = blur(mask)
    sharp = torch.clip(img + weight * residual, 0, 1)
    return soft_mask * sharp + (1 - soft_mask) * img


# ---------------------------------------------------------------------------------------------------------
# The chain


def _resize_factor(
    rng: np.random.Generator, probs: tuple[float, float, float], span: tuple[float, float]
) -> float:
    kind = int(rng.choice(3, p=np.asarray(probs) / np.sum(probs)))  # up, down, keep
    if kind == 0:
        return rng.uniform(1.0, span[1])
    if kind == 1:
        return rng.uniform(span[0], 1.0)
    return 1.0


def _mode(rng: np.random.Generator) -> ResizeMode:
    return _RESIZE_MODES[int(rng.integers(3))]


def _noise(
    img: Tensor,
    rng: np.random.Generator,
    generator: torch.Generator,
    *,
    gaussian_prob: float,
    sigma: tuple[float, float],
    poisson_scale: tuple[float, float],
    gray_prob: float,
) -> Tensor:
    if rng.random() < gaussian_prob:
        s, gray = rng.uniform(*sigma), rng.random() < gray_prob
        noise = gaussian_noise(img, sigma=s, gray=gray, generator=generator)
    else:
        s, gray = rng.uniform(*poisson_scale), rng.random() < gray_prob
        noise = poisson_noise(img, scale=s, gray=gray, generator=generator)
    return torch.clamp(img + noise, 0, 1)


def _quality(rng: np.random.Generator, span: tuple[float, float]) -> int:
    return round(float(rng.uniform(*span)))


def degrade(gt: Tensor, *, scale: int, settings: Degradation, rng: np.random.Generator) -> Tensor:
    """The LR input for an HR image, through Real-ESRGAN's two degradation stages.

    Args:
        gt: ``(3, H, W)`` float32 in ``[0, 1]``, H and W multiples of `scale` (already USM-sharpened if
            ``settings.gt_usm``: see :func:`usm_sharp`).
        scale: Upscaling factor; the result is ``(3, H / scale, W / scale)``.
        settings: The degradation settings.
        rng: The sample's generator; every random choice is drawn from it.

    Returns:
        ``(3, H / scale, W / scale)`` float32, rounded to 8-bit levels, in ``[0, 1]``.
    """
    d = settings
    h, w = gt.shape[-2:]
    generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
    kernel1 = _random_kernel(
        rng,
        max_size=d.blur_kernel_size,
        kinds=d.kernel_list,
        probs=d.kernel_prob,
        sinc_prob=d.sinc_prob,
        sigma=d.blur_sigma,
        betag=d.betag_range,
        betap=d.betap_range,
    )
    kernel2 = _random_kernel(
        rng,
        max_size=d.blur_kernel_size2,
        kinds=d.kernel_list2,
        probs=d.kernel_prob2,
        sinc_prob=d.sinc_prob2,
        sigma=d.blur_sigma2,
        betag=d.betag_range2,
        betap=d.betap_range2,
    )
    sinc = None
    if rng.random() < d.final_sinc_prob:
        size = int(rng.choice(np.arange(_MIN_KERNEL, max(d.blur_kernel_size, d.blur_kernel_size2) + 1, 2)))
        sinc = circular_lowpass_kernel(rng.uniform(np.pi / 3, np.pi), size)

    # Stage 1: blur, resize, noise, JPEG.
    out = filter2d(gt[None], kernel1)
    out = resize(
        out,
        scale_factor=_resize_factor(rng, d.resize_prob, d.resize_range),
        mode=_mode(rng),
        antialias=d.resize_antialias,
    )
    out = _noise(
        out,
        rng,
        generator,
        gaussian_prob=d.gaussian_noise_prob,
        sigma=d.noise_range,
        poisson_scale=d.poisson_scale_range,
        gray_prob=d.gray_noise_prob,
    )
    out = jpeg(out, quality=_quality(rng, d.jpeg_range))
    # Stage 2: blur (maybe), resize relative to the LR size, noise.
    if rng.random() < d.second_blur_prob:
        out = filter2d(out, kernel2)
    factor = _resize_factor(rng, d.resize_prob2, d.resize_range2)
    size2 = (max(1, int(h / scale * factor)), max(1, int(w / scale * factor)))
    out = resize(out, size=size2, mode=_mode(rng), antialias=d.resize_antialias)
    out = _noise(
        out,
        rng,
        generator,
        gaussian_prob=d.gaussian_noise_prob2,
        sigma=d.noise_range2,
        poisson_scale=d.poisson_scale_range2,
        gray_prob=d.gray_noise_prob2,
    )
    # [resize to the LR size + final sinc] and JPEG, in a random order (Real-ESRGAN's two orders).
    lr_size = (h // scale, w // scale)
    sinc_first = rng.random() < 0.5
    if not sinc_first:
        out = jpeg(out, quality=_quality(rng, d.jpeg_range2))
    out = resize(out, size=lr_size, mode=_mode(rng), antialias=d.resize_antialias)
    if sinc is not None:
        out = filter2d(out, sinc)
    if sinc_first:
        out = jpeg(out, quality=_quality(rng, d.jpeg_range2))
    return (torch.clamp((out * 255.0).round(), 0, 255) / 255.0)[0]
