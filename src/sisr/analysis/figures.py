"""The figures LAM papers show, drawn with Pillow and numpy only (no matplotlib).

They follow LAM_Demo's ``SaliencyModel/utils.py`` and its demo notebook:

- the HR image with the window drawn in red (2 pixels wide);
- the attribution map through matplotlib's ``seismic`` colormap at ``map * 0.5 + 0.5`` (0 is white, 1
  dark red), enlarged ``scale`` times with nearest neighbours (``vis_saliency``);
- its weighted kernel density estimate (``scipy.stats.gaussian_kde`` with the map as weights and Scott's
  bandwidth, evaluated on the pixel grid, divided by its maximum), same colormap, enlarged with PIL's
  bicubic (``vis_saliency_kde``);
- the map blended with the LR image enlarged by PIL's bicubic: ``map * (1 - alpha) + lr * alpha`` with
  alpha 0.5, truncated to 8 bits.

The comparison figure puts one column per model, titled with the model and its DI (PIL's default font),
beside the HR image with the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from sisr.analysis.lam import LamResult

__all__ = [
    "blend",
    "comparison_figure",
    "kde",
    "kde_image",
    "saliency_image",
    "seismic",
    "stack_rows",
    "window_image",
    "write_comparison",
    "write_model_figures",
    "write_window_figure",
]

# matplotlib's "seismic": a LinearSegmentedColormap.from_list of these colours at equal spacing, 256 entries.
_SEISMIC = np.array([(0.0, 0.0, 0.3), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0)])
_LUT_SIZE = 256
_RED = (255, 0, 0)
_ALPHA = 0.5


def _seismic_lut() -> np.ndarray:
    # matplotlib's _create_lookup_table, operation for operation (np.interp rounds differently and moves
    # some entries by one 8-bit level).
    n = _LUT_SIZE
    x = np.linspace(0.0, 1.0, len(_SEISMIC)) * (n - 1)
    xind = (n - 1) * np.linspace(0.0, 1.0, n)
    ind = np.searchsorted(x, xind)[1:-1]
    distance = (xind[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
    y = _SEISMIC
    inner = distance[:, None] * (y[ind] - y[ind - 1]) + y[ind - 1]
    return np.clip(np.concatenate([y[:1], inner, y[-1:]]), 0.0, 1.0)  # (256, 3)


def seismic(values: np.ndarray) -> np.ndarray:
    """``(255 * matplotlib.cm.seismic(values)).astype(uint8)`` without its alpha: ``(..., 3)`` uint8."""
    v = np.asarray(values, dtype=np.float64)
    index = np.clip(v * _LUT_SIZE, 0, _LUT_SIZE - 1).astype(np.int64)  # 1.0 maps to the last entry
    return (255 * _seismic_lut()[index]).astype(np.uint8)


def _resize(image: np.ndarray, size: tuple[int, int], resample: PILImage.Resampling) -> np.ndarray:
    """Resizes uint8 ``(H, W, 3)`` to ``size`` = (width, height) with Pillow."""
    return np.asarray(PILImage.fromarray(image).resize(size, resample))


def saliency_image(attribution: np.ndarray, zoom: int) -> np.ndarray:
    """The map through ``seismic`` at ``map * 0.5 + 0.5``, enlarged ``zoom`` times (nearest)."""
    h, w = attribution.shape
    return _resize(seismic(attribution * 0.5 + 0.5), (w * zoom, h * zoom), PILImage.Resampling.NEAREST)


def kde(attribution: np.ndarray) -> np.ndarray:
    """``scipy.stats.gaussian_kde`` of the pixel positions weighted by the map, on the grid, max 1.

    The KDE uses Scott's factor ``n_eff ** (-1/6)`` with ``n_eff = 1 / sum(w^2)`` for normalised weights
    and the weighted covariance of the positions (``np.cov(..., aweights=w)``), as scipy does. Data and
    evaluation points are the same grid, so the sum over data points is a convolution, done by FFT.

    Args:
        attribution: ``(H, W)`` non-negative map, not all zero.

    Returns:
        ``(H, W)`` float64 density divided by its maximum.
    """
    weights = np.asarray(attribution, dtype=np.float64)
    h, w = weights.shape
    ys, xs = np.mgrid[0:h, 0:w]
    points = np.vstack([xs.ravel(), ys.ravel()]).astype(np.float64)  # (2, n) as (x, y), like LAM_Demo
    wn = weights.ravel() / weights.sum()
    neff = 1.0 / np.sum(wn**2)
    cov = np.atleast_2d(np.cov(points, rowvar=True, bias=False, aweights=wn)) * neff ** (-2.0 / 6.0)
    if np.linalg.det(cov) <= 0:  # all weight on one row or column: no 2-D spread to estimate
        cov = cov + np.eye(2) * 0.25
    precision = np.linalg.inv(cov)
    dy, dx = np.mgrid[-(h - 1) : h, -(w - 1) : w].astype(np.float64)  # offsets (y - y', x - x')
    q = precision[0, 0] * dx * dx + 2 * precision[0, 1] * dx * dy + precision[1, 1] * dy * dy
    gauss = np.exp(-0.5 * q)  # (2h - 1, 2w - 1)
    shape = (3 * h - 2, 3 * w - 2)  # the full linear convolution, so the FFT does not wrap around
    full = np.fft.irfft2(np.fft.rfft2(weights, shape) * np.fft.rfft2(gauss, shape), shape)
    density = np.clip(full[h - 1 : 2 * h - 1, w - 1 : 2 * w - 1], 0.0, None)
    return density / density.max()


def kde_image(attribution: np.ndarray, zoom: int) -> np.ndarray:
    """The KDE through ``seismic`` at ``kde * 0.5 + 0.5``, enlarged ``zoom`` times (bicubic)."""
    h, w = attribution.shape
    return _resize(seismic(kde(attribution) * 0.5 + 0.5), (w * zoom, h * zoom), PILImage.Resampling.BICUBIC)


def blend(overlay: np.ndarray, lr: np.ndarray, alpha: float = _ALPHA) -> np.ndarray:
    """``overlay * (1 - alpha) + lr_enlarged * alpha``, truncated to uint8 as LAM_Demo's ``cv2_to_pil``.

    ``lr`` is enlarged to the overlay's size with PIL's bicubic.
    """
    up = _resize(lr, (overlay.shape[1], overlay.shape[0]), PILImage.Resampling.BICUBIC)
    return (overlay.astype(np.float64) * (1.0 - alpha) + up.astype(np.float64) * alpha).astype(np.uint8)


def window_image(hr: np.ndarray, pos: tuple[int, int], window: int) -> np.ndarray:
    """The HR image with the window's outline drawn in red, 2 pixels wide."""
    image = PILImage.fromarray(hr)
    h, w = pos
    ImageDraw.Draw(image).rectangle((w, h, w + window, h + window), outline=_RED, width=2)
    return np.asarray(image)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(image: np.ndarray, max_side: int | None) -> np.ndarray:
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    f = max_side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
    return _resize(image, size, PILImage.Resampling.LANCZOS)


def _column(
    title: str, images: Sequence[np.ndarray], gap: int, font_size: int, *, across: bool = False
) -> PILImage.Image:
    """A title over ``images``, stacked downwards, or side by side when ``across``."""
    font = _font(font_size)
    left, _, right, _ = ImageDraw.Draw(PILImage.new("RGB", (1, 1))).textbbox((0, 0), title, font=font)
    widths, heights = [im.shape[1] for im in images], [im.shape[0] for im in images]
    spread = gap * (len(images) - 1)
    body = (sum(widths) + spread, max(heights)) if across else (max(widths), sum(heights) + spread)
    width = max(body[0], right - left + 4)  # the title is never cut
    title_h = font_size + 8
    col = PILImage.new("RGB", (width, title_h + body[1]), (255, 255, 255))
    ImageDraw.Draw(col).text((2, 3), title, fill=(0, 0, 0), font=font)
    x, y = 0, title_h
    for im in images:
        col.paste(PILImage.fromarray(im), (x, y))
        if across:
            x += im.shape[1] + gap
        else:
            y += im.shape[0] + gap
    return col


def comparison_figure(
    results: Sequence[LamResult],
    *,
    max_side: int | None = None,
    font_size: int = 14,
    label: str | None = None,
    across: bool = False,
) -> np.ndarray:
    """Side by side: the HR image with the window, then per model its map and its KDE blended with the LR.

    Args:
        results: LAM of several models for the same window of the same image.
        max_side: Shrink every panel so that its longer side is at most this many pixels.
        font_size: Height of the titles' font.
        label: Title of the first column (default: the window position).
        across: Put each model's map and KDE side by side (one row per figure) instead of one above
            the other.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    first = results[0]
    st = first.settings
    gap = 4
    columns = [
        _column(
            label or f"window at {st.pos}",
            [_fit(window_image(first.hr, st.pos, st.window), max_side)],
            gap,
            font_size,
        )
    ]
    for r in results:
        panels = [
            _fit(blend(saliency_image(r.map, r.scale), r.lr), max_side),
            _fit(blend(kde_image(r.map, r.scale), r.lr), max_side),
        ]
        title = f"{r.model}  DI {r.diffusion_index:.2f}"
        columns.append(_column(title, panels, gap, font_size, across=across))
    width = sum(c.width for c in columns) + gap * (len(columns) - 1)
    figure = PILImage.new("RGB", (width, max(c.height for c in columns)), (255, 255, 255))
    x = 0
    for c in columns:
        figure.paste(c, (x, 0))
        x += c.width + gap
    return np.asarray(figure)


def stack_rows(rows: Sequence[np.ndarray], gap: int = 8) -> np.ndarray:
    """Stacks figures vertically on white, left-aligned."""
    width = max(r.shape[1] for r in rows)
    height = sum(r.shape[0] for r in rows) + gap * (len(rows) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for r in rows:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return out


def write_model_figures(result: LamResult, folder: Path, *, tag: str) -> list[Path]:
    """Writes ``TAG_map.png``, ``TAG_kde.png`` and ``TAG_blend.png`` (map over the LR, alpha 0.5)."""
    from sisr.data.images import write_image

    saliency = saliency_image(result.map, result.scale)
    figures = {
        f"{tag}_map.png": saliency,
        f"{tag}_kde.png": kde_image(result.map, result.scale),
        f"{tag}_blend.png": blend(saliency, result.lr),
    }
    paths = []
    for name, pixels in figures.items():
        write_image(folder / name, pixels)
        paths.append(folder / name)
    return paths


def write_window_figure(result: LamResult, path: Path) -> None:
    """Writes the HR image with the window drawn."""
    from sisr.data.images import write_image

    write_image(path, window_image(result.hr, result.settings.pos, result.settings.window))


def write_comparison(results: Sequence[LamResult], path: Path) -> None:
    """Writes :func:`comparison_figure` of several models."""
    from sisr.data.images import write_image

    write_image(path, comparison_figure(results))
