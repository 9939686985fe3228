"""Local Attribution Maps (LAM, Gu & Dong, CVPR 2021) and the Diffusion Index, as the reference computes them.

LAM asks which input pixels a super-resolution network uses to draw the edges inside a small window of
its output. It integrates gradients along a path from a blurred LR image to the LR image itself and
condenses the resulting map into one number, the Diffusion Index DI = (1 - Gini) * 100: high when many
pixels contribute, low when a few do. Published DI values come from the reference code
(X-Lowlevel-Vision/LAM_Demo, ``SaliencyModel/``), so every convention here follows it:

- **Images.** The HR image is cropped to a multiple of the scale (bottom rows, right columns dropped);
  the LR image is PIL's bicubic ``resize`` of it, in 8 bits (``lr="matlab"`` uses MATLAB's antialiased
  bicubic instead, the papers' benchmark protocol). The network sees ``uint8 / 255`` as float32.
- **Objective.** ``(h, w)`` is the top-left corner of the ``window`` x ``window`` box in SR pixels. Per
  channel, the edge magnitude is ``sqrt((x[i, j] - x[i+1, j])^2 + (x[i, j] - x[i, j+1])^2)``; the
  objective is its sum over the box and the channels.
- **Path.** ``fold + 1`` isotropic Gaussian kernels of size ``kernel``, with sigma running
  ``linspace(sigma, 0, fold + 1)``, each using ``sigma + 1e-5`` and normalised to sum 1. Step ``i``
  (0-based) feeds the LR image filtered with kernel ``i + 1`` (so the sigma image itself is never fed)
  and weights its gradient by the LR image filtered with ``(kernel[i + 1] - kernel[i]) * fold``.
  Filtering is correlation with ``cv2.filter2D``'s default border, reflect-101 (``dcb|abcd|cba``),
  reproduced here in torch.
- **Map.** NaN gradients become 0 (the square root's gradient at a flat spot); the map is the mean over
  the path of gradient times weight, summed over channels, then its absolute value divided by its
  maximum. It has the LR image's size.
- **Gini.** On the flattened float32 map: shifted to be non-negative, plus 1e-7, sorted,
  ``sum((2i - n - 1) x_i) / (n sum(x))``.

The network runs on the whole LR image, never in tiles: tiling would cut exactly the long-range paths
LAM measures (MMA's scan spans the image). Path points are batched (``batch_size``) to use the memory
the machine has; results do not depend on the batch size beyond float rounding.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from torch import Tensor, nn

from sisr.errors import SisrError
from sisr.precision import Precision, autocast, check_model_precision

__all__ = [
    "LamResult",
    "LamSettings",
    "LrMethod",
    "attribution_map",
    "blur_path",
    "diffusion_index",
    "edge_objective",
    "filter2d",
    "gaussian_kernel",
    "gini",
    "lam",
    "make_lr",
    "modcrop_hr",
    "path_gradients",
    "run_lam",
]

LrMethod = Literal["pil", "matlab"]


@dataclass(frozen=True)
class LamSettings:
    """Where and how LAM looks; the defaults are the reference demo's.

    Attributes:
        pos: ``(h, w)``, the top-left corner of the window in SR (= cropped HR) pixels.
        window: Side of the square window, in SR pixels.
        sigma: Sigma of the most blurred image of the path.
        fold: Number of path steps.
        kernel: Side of the (odd) Gaussian kernels.
        lr: How the LR image is made: ``"pil"`` (bicubic, as the reference) or ``"matlab"``.
    """

    pos: tuple[int, int]
    window: int = 16
    sigma: float = 1.2
    fold: int = 50
    kernel: int = 9
    lr: LrMethod = "pil"

    def __post_init__(self) -> None:
        pos = tuple(self.pos)
        if len(pos) != 2 or any(isinstance(p, bool) or not isinstance(p, numbers.Integral) for p in pos):
            raise SisrError(f"the window position must be two integers (H W), got {self.pos!r}")
        object.__setattr__(self, "pos", (int(pos[0]), int(pos[1])))  # numpy integers become ints
        if self.window < 1:
            raise SisrError(f"the window must be at least 1 pixel, got {self.window}")
        if self.fold < 1:
            raise SisrError(f"fold must be at least 1, got {self.fold}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise SisrError(f"the kernel size must be odd and positive, got {self.kernel}")
        if not np.isfinite(self.sigma) or self.sigma < 0:
            raise SisrError(f"sigma must be finite and >= 0, got {self.sigma}")
        if self.lr not in ("pil", "matlab"):
            raise SisrError(f"lr must be 'pil' or 'matlab', got {self.lr!r}")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (``pos`` as a list)."""
        return {
            "pos": list(self.pos),
            "window": self.window,
            "sigma": self.sigma,
            "fold": self.fold,
            "kernel": self.kernel,
            "lr": self.lr,
        }


@dataclass(frozen=True, eq=False)
class LamResult:
    """The attribution of one network for one window.

    Attributes:
        model: The network's name as given.
        scale: Its upscaling factor.
        settings: Where and how it was measured.
        map: ``(h, w)`` float32 normalised attribution map (max 1), the LR image's size.
        gini: Gini coefficient of the map.
        diffusion_index: ``(1 - gini) * 100``.
        hr: The HR image cropped to a multiple of the scale, ``(H, W, 3)`` uint8.
        lr: The LR image the network saw, ``(H / scale, W / scale, 3)`` uint8.
    """

    model: str
    scale: int
    settings: LamSettings
    map: np.ndarray
    gini: float
    diffusion_index: float
    hr: np.ndarray
    lr: np.ndarray

    def as_dict(self) -> dict[str, object]:
        """The entry of ``--json``'s ``models`` list."""
        return {"model": self.model, "diffusion_index": self.diffusion_index, "gini": self.gini}


# ---------------------------------------------------------------------------------------------------------
# Images


def modcrop_hr(hr: np.ndarray, scale: int) -> np.ndarray:
    """Crops ``(H, W, C)`` to multiples of ``scale`` by dropping bottom rows and right columns."""
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    return hr[:h, :w]


def make_lr(hr: np.ndarray, scale: int, method: LrMethod = "pil") -> np.ndarray:
    """The LR image LAM feeds the network, from an HR image already cropped to a multiple of ``scale``.

    Args:
        hr: ``(H, W, 3)`` uint8 RGB.
        scale: The downscaling factor.
        method: ``"pil"``: ``PIL.Image.resize(..., BICUBIC)`` as the reference's ``prepare_images``;
            ``"matlab"``: MATLAB's ``imresize(hr, 1/scale, 'bicubic')`` rounded to 8 bits.

    Returns:
        ``(H / scale, W / scale, 3)`` uint8.
    """
    if method == "matlab":
        from sisr.imresize import bicubic_lr

        return bicubic_lr(hr, scale)
    size = (hr.shape[1] // scale, hr.shape[0] // scale)  # PIL sizes are (width, height)
    return np.asarray(PILImage.fromarray(hr).resize(size, PILImage.Resampling.BICUBIC))


# ---------------------------------------------------------------------------------------------------------
# The blur path


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """The reference's isotropic Gaussian: ``(size, size)`` float64, sigma + 1e-5, summing to 1."""
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    kernel = np.exp(-(xx**2 + yy**2) / (2.0 * (sigma + 1e-5) ** 2))
    return kernel / np.sum(kernel)


def _reflect101(n: int, pad: int) -> np.ndarray:
    """Source indices of ``n`` samples padded by ``pad`` on each side with reflect-101 (``cba|abc|cba``)."""
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)  # reflecting at both ends repeats with this period, for any pad
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def filter2d(image: Tensor, kernels: Tensor) -> Tensor:
    """Correlates every channel with every kernel, with ``cv2.filter2D``'s default reflect-101 border.

    Args:
        image: ``(C, H, W)`` float tensor.
        kernels: ``(K, k, k)`` kernels, ``k`` odd (anchored at their centre, as OpenCV's default).

    Returns:
        ``(K, C, H, W)``: ``out[i, c]`` is channel ``c`` filtered with kernel ``i``.
    """
    _, h, w = image.shape
    pad = kernels.shape[-1] // 2
    rows = torch.from_numpy(_reflect101(h, pad))
    cols = torch.from_numpy(_reflect101(w, pad))
    padded = image[:, rows][:, :, cols]  # (C, H + 2 pad, W + 2 pad)
    out = F.conv2d(padded[:, None], kernels[:, None].to(image.dtype))  # (C, K, H, W): conv2d correlates
    return out.transpose(0, 1).contiguous()


def blur_path(image: Tensor, *, sigma: float, fold: int, kernel: int) -> tuple[Tensor, Tensor]:
    """The Gaussian blur path of the reference (``GaussianBlurPath``) and its derivative.

    Args:
        image: ``(C, H, W)`` float32 LR image.
        sigma: Sigma of the first kernel; the last has sigma 0 (+1e-5: a delta).
        fold: Number of steps.
        kernel: Kernel side (odd).

    Returns:
        ``(images, weights)``, both ``(fold, C, H, W)`` float32: step ``i`` feeds ``images[i]`` (the image
        filtered with kernel ``i + 1``) and multiplies its gradient by ``weights[i]`` (the image filtered
        with ``(kernel[i + 1] - kernel[i]) * fold``).
    """
    sigmas = np.linspace(sigma, 0, fold + 1)
    kernels = np.stack([gaussian_kernel(kernel, s) for s in sigmas])  # (fold + 1, k, k) float64
    both = np.concatenate([kernels[1:], (kernels[1:] - kernels[:-1]) * fold])  # (2 fold, k, k)
    # OpenCV filters a float32 image with the kernel converted to float32 too.
    out = filter2d(image.to(torch.float32), torch.from_numpy(both.astype(np.float32)))
    return out[:fold], out[fold:]


# ---------------------------------------------------------------------------------------------------------
# Gradients, map and index


def edge_objective(sr: Tensor, h: int, w: int, window: int) -> Tensor:
    """The reference's ``attr_grad``: summed edge magnitude inside the window, per batch item.

    Args:
        sr: ``(B, C, H, W)`` network output.
        h: Top row of the window.
        w: Left column of the window.
        window: Window side. Edge magnitudes exist for rows ``< H - 1`` and columns ``< W - 1``, so a
            window touching the bottom or right border sums over one row or column less.

    Returns:
        ``(B,)``: per item, the sum over channels and the window of the per-channel edge magnitude.
    """
    # Only the window and one row and column past it enter, so crop first (same values, less work).
    x = sr[:, :, h : h + window + 1, w : w + window + 1]
    dh = (x[:, :, :-1, :] - x[:, :, 1:, :]) ** 2  # (B, C, h' - 1, w')
    dw = (x[:, :, :, :-1] - x[:, :, :, 1:]) ** 2  # (B, C, h', w' - 1)
    magnitude = torch.sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])
    return magnitude[:, :, :window, :window].sum(dim=(1, 2, 3))


def path_gradients(
    model: nn.Module,
    images: Tensor,
    weights: Tensor,
    objective: Callable[[Tensor], Tensor],
    *,
    batch_size: int = 8,
    precision: Precision = "fp32",
) -> Tensor:
    """Gradients of the objective at every path point, times the path's derivative (``Path_gradient``).

    Args:
        model: The network, run as given (put it in eval mode first) on the device of its parameters.
        images: ``(fold, C, H, W)`` path points.
        weights: ``(fold, C, H, W)`` path derivative at those points.
        objective: Maps the ``(B, C, sH, sW)`` output to ``(B,)`` per-item objectives.
        batch_size: Path points per forward and backward pass.
        precision: The forward runs under :func:`sisr.precision.autocast` in this precision (not checked
            here: see :func:`sisr.precision.check_model_precision`); the input, the objective and the
            gradient stay float32, autograd carrying the gradient back through autocast's casts.

    Returns:
        ``(fold, C, H, W)`` float32 on the CPU, with NaN gradients set to 0 before weighting.
    """
    if batch_size < 1:
        raise SisrError(f"batch_size must be at least 1, got {batch_size}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    out = torch.empty(images.shape, dtype=torch.float32)
    with torch.enable_grad():
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device).requires_grad_(True)
            # Items are independent, so the gradient of the summed objective is each item's own gradient;
            # autograd.grad leaves the parameters' .grad untouched.
            with autocast(precision, device):
                sr = model(x)
            (grad,) = torch.autograd.grad(objective(sr.float()).sum(), x)
            grad = torch.where(torch.isnan(grad), torch.zeros_like(grad), grad).cpu().float()
            out[start : start + batch_size] = grad * weights[start : start + batch_size]
    return out


def attribution_map(path_grads: Tensor | np.ndarray) -> np.ndarray:
    """The normalised map: mean over the path, summed over channels, absolute value, divided by its max.

    Args:
        path_grads: ``(fold, C, H, W)`` from :func:`path_gradients`.

    Returns:
        ``(H, W)`` float32 in [0, 1] (``grad_abs_norm`` of the reference).

    Raises:
        SisrError: The attribution is zero (or not finite) everywhere.
    """
    grads = np.asarray(path_grads, dtype=np.float32)
    summed = np.abs(grads.mean(axis=0).sum(axis=0))  # float32, as the reference's numpy code
    top = summed.max()
    if not np.isfinite(top) or top <= 0:
        raise SisrError(
            "the attribution map is zero everywhere: the window's edges do not depend on the input"
        )
    return (summed / top).astype(np.float32)


def gini(values: np.ndarray) -> float:
    """The reference's Gini coefficient of a map, in the map's dtype (float32 for LAM maps).

    Shifted to be non-negative, 1e-7 added (no zeros), then ``sum((2i - n - 1) x_(i)) / (n sum x)`` over the
    sorted values ``x_(1) <= ... <= x_(n)``. 0 for a flat map, close to 1 when one value holds everything.
    """
    a = np.asarray(values).flatten()
    if np.amin(a) < 0:
        a = a - np.amin(a)
    a = np.sort(a + 0.0000001)
    n = a.shape[0]
    index = np.arange(1, n + 1)
    return float(np.sum((2 * index - n - 1) * a) / (n * np.sum(a)))


def diffusion_index(attribution: np.ndarray) -> float:
    """DI = (1 - Gini) * 100 of a normalised attribution map."""
    return (1.0 - gini(attribution)) * 100.0


# ---------------------------------------------------------------------------------------------------------
# One network, one window


def _check_window(settings: LamSettings, height: int, width: int) -> None:
    h, w = settings.pos
    win = settings.window
    if height < win or width < win:
        raise SisrError(
            f"the image ({height}x{width} after cropping to the scale) is smaller than the {win}x{win} window"
        )
    if not (0 <= h <= height - win and 0 <= w <= width - win):
        raise SisrError(
            f"the {win}x{win} window at (H, W) = ({h}, {w}) is outside the {height}x{width} image "
            f"(H must be in 0..{height - win}, W in 0..{width - win})"
        )


def _scale_of(model: nn.Module) -> int:
    from sisr.models import scale_of

    return scale_of(model)


def lam(
    model: nn.Module,
    hr: np.ndarray,
    settings: LamSettings,
    *,
    name: str = "model",
    scale: int | None = None,
    batch_size: int = 8,
    precision: Precision = "fp32",
) -> LamResult:
    """Computes the local attribution map and the Diffusion Index of one network for one window.

    Args:
        model: A super-resolution network in eval mode, (B, 3, H, W) in [0, 1] -> (B, 3, sH, sW).
        hr: ``(H, W, 3)`` uint8 RGB HR image (cropped here to a multiple of the scale).
        settings: Window and path.
        name: The network's name, kept in the result.
        scale: Its upscaling factor; None reads it from a sisr network.
        batch_size: Path points per forward/backward pass (memory grows with it).
        precision: The forward's precision (autocast), as :func:`path_gradients`; not checked here.

    Returns:
        The map, Gini and DI, and the images they were computed on.

    Raises:
        SisrError: The window is outside the image, the image is smaller than the window, or the
            attribution is zero everywhere.
    """
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
        raise SisrError(f"LAM takes an (H, W, 3) uint8 RGB image, got {hr.dtype} {tuple(hr.shape)}")
    s = _scale_of(model) if scale is None else scale
    hr = modcrop_hr(hr, s)
    _check_window(settings, hr.shape[0], hr.shape[1])
    if hr.shape[0] < s or hr.shape[1] < s:
        raise SisrError(f"the image ({hr.shape[0]}x{hr.shape[1]}) is smaller than the scale {s}")
    lr = make_lr(hr, s, settings.lr)
    image = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float() / 255.0  # (3, h, w)
    images, weights = blur_path(image, sigma=settings.sigma, fold=settings.fold, kernel=settings.kernel)
    h, w = settings.pos

    def objective(sr: Tensor) -> Tensor:
        if sr.shape[-2:] != (hr.shape[0], hr.shape[1]):
            got, size = tuple(sr.shape[-2:]), tuple(lr.shape[:2])
            raise SisrError(f"{name}: output is {got} for a {size} input, not x{s}")
        return edge_objective(sr, h, w, settings.window)

    grads = path_gradients(model, images, weights, objective, batch_size=batch_size, precision=precision)
    attribution = attribution_map(grads)
    g = gini(attribution)
    return LamResult(name, s, settings, attribution, g, (1.0 - g) * 100.0, hr, lr)


# ---------------------------------------------------------------------------------------------------------
# The workflow behind `sisr lam`


def _rgb8(pixels: np.ndarray, path: str) -> np.ndarray:
    if pixels.dtype != np.uint8:
        raise SisrError(f"{path}: LAM takes 8-bit images (as the reference), this one has 16 bits per sample")
    if pixels.shape[2] <= 2:  # gray, or gray + alpha
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])  # RGBA: the reference keeps the colour channels


def _display_name(source: str) -> str:
    return Path(source).stem if os.sep in source or Path(source).suffix else source


def _file_tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def map_paths(map_path: str | os.PathLike[str], names: Sequence[str]) -> list[Path]:
    """Where ``--map`` puts each model's map: the path itself for one model, ``STEM_NAME.npy`` for several."""
    path = Path(map_path)
    if len(names) == 1:
        return [path]
    suffix = path.suffix or ".npy"
    return [path.with_name(f"{path.stem}_{_file_tag(n)}{suffix}") for n in names]


def summary_line(result: LamResult) -> str:
    """The stdout line of one model: its DI, Gini and the settings."""
    st = result.settings
    return (
        f"{result.model}: DI {result.diffusion_index:.2f} (Gini {result.gini:.4f}); x{result.scale}, "
        f"window {st.window} at (H, W) = {st.pos}, sigma {st.sigma:g}, fold {st.fold}, kernel {st.kernel}, "
        f"LR {st.lr}"
    )


def _write_file(path: Path, write: Callable[[str], object]) -> None:
    from sisr.atomic import atomic_write

    try:
        atomic_write(path, write)
    except OSError as e:
        raise SisrError(f"{path}: cannot write: {e.strerror or e}") from None


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    _write_file(path, write)


def _save_json(path: Path, data: object) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")

    _write_file(path, write)


def _check_folder_of(path: Path) -> None:
    """Fails before any work when the file could not be written for want of its folder."""
    if not path.parent.is_dir():
        raise SisrError(f"{path}: cannot write: the folder {path.parent} does not exist")


def _prepare_folder(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SisrError(f"{path}: cannot create the {what} folder: {e.strerror or e}") from None


def run_lam(
    hr_path: str | os.PathLike[str],
    models: Sequence[str],
    settings: LamSettings,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    map_path: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    precision: Precision = "fp32",
    echo: Callable[[str], object] | None = print,
) -> list[LamResult]:
    """``sisr lam``: LAM of each model for one window of one HR image, and every file asked for.

    Everything that can fail on bad input (the image, the models, the window) is checked before the first
    gradient is computed; files are written atomically, the maps and JSON after all models are done.

    Args:
        hr_path: The HR image file (8-bit; gray becomes RGB, alpha is dropped).
        models: Shipped model names or checkpoint files, loaded with :func:`sisr.load_model`.
        settings: Window and path.
        out_dir: Folder for the figures (created if needed): ``window.png``, and per model
            ``NAME_map.png``, ``NAME_kde.png``, ``NAME_blend.png``; ``comparison.png`` for several models.
        json_path: Writes ``{"models": [{"model", "diffusion_index", "gini"}], "settings": {...}}``.
        map_path: Writes each normalised map as float32 ``.npy`` (LR-sized); with several models the name
            of each model is appended to the stem.
        device: Where the networks run.
        batch_size: Path points per forward/backward pass.
        precision: ``fp32`` (default), ``bf16`` or ``fp16``: the networks' forward under autocast, where
            the device runs it natively and each architecture's gate allows it (:mod:`sisr.precision`).
        echo: Called with one line per model as soon as it is done (None: silent).

    Returns:
        One result per model, in order.

    Raises:
        SisrError: Unreadable image, unknown model, window outside the image or image smaller than it,
            or a precision refused for a model on this device.
    """
    from sisr.checkpoint import load_model
    from sisr.data.images import read_image

    if not models:
        raise SisrError("no model given")
    source = os.fspath(hr_path)
    hr = _rgb8(read_image(source).pixels, source)
    names = [_display_name(m) for m in models]
    if len(set(names)) != len(names):
        raise SisrError(f"the models' names must differ (they name the output files): {', '.join(names)}")
    loaded = [load_model(m, device=device) for m in models]
    for net in loaded:
        check_model_precision(net, precision)
        s = _scale_of(net)
        _check_window(settings, hr.shape[0] - hr.shape[0] % s, hr.shape[1] - hr.shape[1] % s)
    maps = None if map_path is None else map_paths(map_path, names)
    for path in [*(maps or []), *([Path(json_path)] if json_path is not None else [])]:
        _check_folder_of(path)
    if out_dir is not None:
        _prepare_folder(Path(out_dir), "figures")

    results = []
    for name, net in zip(names, loaded, strict=True):
        result = lam(net, hr, settings, name=name, batch_size=batch_size, precision=precision)
        results.append(result)
        if echo is not None:
            echo(summary_line(result))
        if out_dir is not None:
            from sisr.analysis.figures import write_model_figures

            write_model_figures(result, Path(out_dir), tag=_file_tag(name))

    if out_dir is not None:
        from sisr.analysis.figures import write_comparison, write_window_figure

        write_window_figure(results[0], Path(out_dir) / "window.png")
        if len(results) > 1:
            write_comparison(results, Path(out_dir) / "comparison.png")
    if maps is not None:
        for path, result in zip(maps, results, strict=True):
            _save_npy(path, result.map.astype(np.float32))
    if json_path is not None:
        data = {
            "models": [r.as_dict() for r in results],
            "settings": {"image": source, **settings.as_dict()},
        }
        _save_json(Path(json_path), data)
    return results
