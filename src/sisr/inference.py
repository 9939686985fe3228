"""Running a super-resolution network on whole images, optionally in overlapping tiles.

Tiling bounds memory by the tile size: the network sees one ``tile x tile`` crop at a time and its
output is added straight into the result. Neighbouring tiles overlap by ``overlap`` input pixels. Inside
the overlap the outermost quarter of each tile, where the network lacks context and its zero padding
shows, is dropped, and the middle half cross-fades between the two tiles with a raised-cosine ramp, so
no seam shows. Weights are normalised per axis, which makes the result a convex combination of tile
outputs at every pixel. The last tile of a row or column is aligned to the image border instead of being
padded. When one tile covers the whole image the network runs once on the whole image, bit-identical to
untiled inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sisr.data.images import Image
from sisr.errors import SisrError
from sisr.precision import Precision, autocast, check_model_precision

__all__ = ["OnTile", "tile_starts", "upscale", "upscale_image", "upscale_tensor"]

# Called after each tile with (tiles done, tiles in the image); may raise to stop the work at that tile.
OnTile = Callable[[int, int], None]


def upscale_image(
    model: nn.Module,
    image: Image,
    *,
    tile: int | None = None,
    overlap: int = 16,
    precision: Precision = "fp32",
    on_tile: OnTile | None = None,
) -> Image:
    """Super-resolves every frame of an :class:`~sisr.data.images.Image` with :func:`upscale`.

    The result keeps what the image carries besides its pixels: the frames' order and durations, the
    loop count, the ICC profile and the EXIF block, so that :func:`sisr.data.images.write_image` writes
    them out again.

    Args:
        model: As for :func:`upscale`.
        image: A decoded image, e.g. from :func:`sisr.data.images.read_image` with ``all_frames=True``.
        tile: As for :func:`upscale`.
        overlap: As for :func:`upscale`.
        precision: As for :func:`upscale`.
        on_tile: As for :func:`upscale_tensor`, counted afresh for every frame.

    Returns:
        The upscaled image; its `format` is the input's.
    """
    frames = image.frames
    first, *later = (
        upscale(model, pixels, tile=tile, overlap=overlap, precision=precision, on_tile=on_tile)
        for pixels in frames
    )
    return dataclasses.replace(image, pixels=first, later_frames=tuple(later))


def upscale(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    precision: Precision = "fp32",
    on_tile: OnTile | None = None,
) -> np.ndarray:
    """Super-resolves a uint8 or uint16 image.

    Pixels are scaled to [0, 1] and run through `model` on the device of its parameters; the result is
    clamped, rounded and returned with the input's dtype and layout. The network always sees RGB:

    - gray is replicated to three channels and the output's channel mean is kept;
    - RGBA runs its RGB through the network, and its alpha replicated to three channels as a second
      batch item whose channel mean becomes the new alpha (as Real-ESRGAN does), so edges of the alpha
      mask are as sharp as the colour. A constant alpha (e.g. fully opaque) is just kept constant;
    - gray + alpha (C = 2) runs its gray as gray does and its alpha as RGBA's, and stays gray + alpha.

    Args:
        model: Maps (B, 3, H, W) floats in [0, 1] to (B, 3, sH, sW). Evaluated as given (call ``.eval()``
            first); it is not moved or modified.
        image: ``(H, W)`` or ``(H, W, C)`` array, C in (1, 2, 3, 4), dtype uint8 or uint16.
        tile: Tile size in input pixels, or None for the whole image at once.
        overlap: Overlap between neighbouring tiles in input pixels; None: 16, or half a smaller tile.
        precision: As for :func:`upscale_tensor`.
        on_tile: As for :func:`upscale_tensor`.

    Returns:
        ``(sH, sW)`` or ``(sH, sW, C)`` array of the input's dtype.

    Raises:
        SisrError: Bad `tile` or `overlap`, or a precision refused (:func:`sisr.precision.check_precision`).
        TypeError: `image` has an unsupported dtype.
        ValueError: `image` has an unsupported shape.
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"image must be uint8 or uint16, got {image.dtype}")
    squeeze = image.ndim == 2
    pixels = image[:, :, None] if squeeze else image
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or 0 in pixels.shape:
        raise ValueError(f"image must be (H, W) or (H, W, C) with C in 1, 2, 3, 4, got shape {image.shape}")
    top = float(np.iinfo(image.dtype).max)
    gray = pixels.shape[2] <= 2
    has_alpha = pixels.shape[2] in (2, 4)

    with torch.inference_mode():  # outputs of upscale_tensor are inference tensors
        # (C, H, W) float32 in [0, 1]; float32 holds every 16-bit value exactly after scaling back.
        x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)).astype(np.float32)).div_(top)
        colour = x[:-1] if has_alpha else x  # (1 or 3, H, W)
        colour = colour.expand(3, -1, -1)
        # A constant alpha (e.g. fully opaque) needs no network.
        alpha = x[-1, 0, 0].item() if has_alpha and bool((x[-1] == x[-1, 0, 0]).all()) else None
        if not has_alpha or alpha is not None:
            batch = colour[None]  # (1, 3, H, W)
        else:
            batch = torch.stack([colour, x[-1].expand(3, -1, -1)])  # (2, 3, H, W): colour, then alpha

        y = upscale_tensor(
            model, batch, tile=tile, overlap=overlap, precision=precision, on_tile=on_tile
        ).float()  # (B, 3, sH, sW)
        out = y[0].mean(dim=0, keepdim=True) if gray else y[0]
        if alpha is not None:
            out = torch.cat([out, y.new_full((1, *y.shape[2:]), alpha)])
        elif has_alpha:
            out = torch.cat([out, y[1].mean(dim=0, keepdim=True)])
        out = out.clamp_(0.0, 1.0).mul_(top).round_().numpy().astype(image.dtype).transpose(1, 2, 0)
    out = np.ascontiguousarray(out)
    return out[:, :, 0] if squeeze else out


def upscale_tensor(
    model: nn.Module,
    x: Tensor,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    precision: Precision = "fp32",
    on_tile: OnTile | None = None,
) -> Tensor:
    """Runs `model` on a batch, in overlapping tiles if `tile` is smaller than the image.

    Each tile is moved to the device and dtype of the model's parameters, and its output is accumulated
    on the device of `x`, so with `x` on the CPU the accelerator only ever holds one tile. Runs under
    ``torch.inference_mode``. A model with a ``min_size`` attribute (SeemoRe's smallest input side) gets
    images with a shorter side padded by edge replication up to that size, and the padding's output is
    cropped off again.

    Args:
        model: Maps (B, 3, h, w) to (B, 3, s*h, s*w) for an integer scale s.
        x: (B, 3, H, W) input.
        tile: Tile size in input pixels (square), or None to run on the whole image. Along a side that is
            not longer than `tile` there is a single tile.
        overlap: Overlap between neighbouring tiles in input pixels, 0 <= overlap < tile; None: 16, or
            half the tile when that is smaller (the one place this default is applied).
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"`` autocast where the device runs it natively and
            the architecture's measured gate allows it (:mod:`sisr.precision`).
        on_tile: Called after each tile (once for a whole image) with the number of tiles done and the
            number in the image, e.g. to show progress; an exception it raises stops the work there.

    Returns:
        (B, 3, s*H, s*W) output on the device of `x`, in the model's dtype.

    Raises:
        SisrError: `tile` < 1 or below the model's ``min_size``, `overlap` out of range, or a precision
            refused (:func:`sisr.precision.check_precision`).
    """
    min_size = int(getattr(model, "min_size", 1))
    if tile is not None:
        if tile < max(1, min_size):
            raise SisrError(f"tile size must be at least {max(1, min_size)} for this model, got {tile}")
        if overlap is None:
            overlap = min(16, tile // 2)
        if not 0 <= overlap < tile:
            raise SisrError(
                f"tile overlap must be at least 0 and smaller than the tile size {tile}, got {overlap}"
            )
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    dtype = param.dtype if param is not None and param.is_floating_point() else x.dtype
    height, width = x.shape[-2:]
    check_model_precision(model, precision)

    def run(part: Tensor) -> Tensor:  # (B, 3, h, w) -> (B, 3, s*h, s*w) on x's device, in `dtype`
        with autocast(precision, device):
            y = model(part.to(device, dtype))
        return y.to(x.device, dtype)

    with torch.inference_mode():
        if height < min_size or width < min_size:
            pad_h, pad_w = max(0, min_size - height), max(0, min_size - width)
            padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            y = upscale_tensor(
                model, padded, tile=tile, overlap=overlap, precision=precision, on_tile=on_tile
            )
            scale = y.shape[-1] // (width + pad_w)
            return y[..., : scale * height, : scale * width]
        if tile is None or (tile >= height and tile >= width):
            y = run(x)
            if on_tile is not None:
                on_tile(1, 1)
            return y

        rows = tile_starts(height, tile, overlap)
        cols = tile_starts(width, tile, overlap)
        tile_h, tile_w = min(tile, height), min(tile, width)
        out = None
        for i, top in enumerate(rows):
            for j, left in enumerate(cols):
                y = run(x[..., top : top + tile_h, left : left + tile_w])
                if out is None:  # first tile: now the scale and output dtype are known
                    scale = y.shape[-1] // tile_w
                    if scale < 1 or y.shape[-2:] != (scale * tile_h, scale * tile_w):
                        raise ValueError(
                            f"model output {tuple(y.shape)} is not a multiple of {(tile_h, tile_w)}"
                        )
                    out = y.new_zeros((*y.shape[:-2], scale * height, scale * width))
                    weight_y = _blend_weights(rows, tile_h, overlap, height, scale).to(y)  # (rows, s*tile_h)
                    weight_x = _blend_weights(cols, tile_w, overlap, width, scale).to(y)  # (cols, s*tile_w)
                window = weight_y[i][:, None] * weight_x[j][None, :]  # (s*tile_h, s*tile_w)
                region = (
                    ...,
                    slice(scale * top, scale * (top + tile_h)),
                    slice(scale * left, scale * (left + tile_w)),
                )
                out[region] += y * window
                if on_tile is not None:
                    on_tile(i * len(cols) + j + 1, len(rows) * len(cols))
    return out


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Returns the start offsets of tiles covering ``range(length)``.

    Tiles step by ``tile - overlap``; the last one ends exactly at `length`, so it may overlap its
    neighbour by more than `overlap`. A side no longer than `tile` has the single start 0.
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return [*starts, length - tile]


def _blend_weights(starts: list[int], tile: int, overlap: int, length: int, scale: int) -> Tensor:
    """Per-tile 1-D output weights along one axis, normalised to sum to one at every output position.

    Returns (len(starts), scale * tile). On each side where a tile meets a neighbour, its overlap of
    ``L = scale * overlap`` output pixels is split in quarters: the outer quarter, where missing context
    spoils the network's output most, gets weight 0; the middle half cross-fades with a raised-cosine
    ramp; the inner quarter keeps weight 1. Two neighbours' ramps cover the same pixels, so their weights
    add up to one there; where the last tile overlaps more than `overlap`, the normalisation takes over.
    """
    n = scale * tile
    overlap_out = scale * overlap
    margin = overlap_out // 4
    fade = overlap_out - 2 * margin  # > 0 whenever overlap_out > 0
    t = (torch.arange(fade, dtype=torch.float64) + 0.5) / fade
    rise = torch.cat([torch.zeros(margin, dtype=torch.float64), 0.5 - 0.5 * torch.cos(torch.pi * t)])
    weights = torch.ones(len(starts), n, dtype=torch.float64)
    for k, start in enumerate(starts):
        if start > 0:  # a neighbour on the low side
            weights[k, : rise.numel()] = rise
        if start + tile < length:  # a neighbour on the high side
            weights[k, n - rise.numel() :] = rise.flip(0)
    total = torch.zeros(scale * length, dtype=torch.float64)
    for k, start in enumerate(starts):
        total[scale * start : scale * start + n] += weights[k]
    for k, start in enumerate(starts):
        weights[k] /= total[scale * start : scale * start + n]
    return weights
