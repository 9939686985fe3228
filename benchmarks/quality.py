"""Quality of every shipped model, and of bicubic, on held-out photographs (the README's quality table).

The photographs are scikit-image's bundled ones (``skimage.data``), none of which is in the training set.
The protocol is the papers': HR cropped to a multiple of the scale, LR made by MATLAB's bicubic
``imresize(HR, 1/scale)``, the SR output rounded to 8 bits, ``scale`` pixels cropped from each border,
PSNR and SSIM on the BT.601 Y channel. "bicubic" upsamples the LR image with the same MATLAB bicubic.

Usage: python benchmarks/quality.py [--models NAME ...] [--photos NAME ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import skimage.data

from sisr.checkpoint import load_model, shipped_models
from sisr.imresize import imresize
from sisr.inference import upscale
from sisr.metrics import modcrop, psnr, ssim
from sisr.models import scale_of

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field")


def photo(name: str) -> np.ndarray:
    """A bundled RGB photograph as uint8 (H, W, 3)."""
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def lr_of(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic LR image of a mod-cropped HR image, rounded to 8 bits like MATLAB's im2uint8."""
    return _to_uint8(imresize(hr.astype(np.float32) / 255.0, 1.0 / scale))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    return _to_uint8(imresize(lr.astype(np.float32) / 255.0, float(scale)))


def scores(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    return (
        psnr(sr, hr, crop_border=scale, y_channel=True),
        ssim(sr, hr, crop_border=scale, y_channel=True),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    args = parser.parse_args()
    names = args.models or list(shipped_models())
    if not names:
        raise SystemExit("no shipped models: nothing to evaluate")

    print(f"Held-out photographs (skimage.data): {', '.join(args.photos)}\n")
    print("| model | scale | params | PSNR-Y bicubic | PSNR-Y model | gain | SSIM-Y bicubic | SSIM-Y model |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        model = load_model(name)
        scale = scale_of(model)
        params = sum(p.numel() for p in model.parameters())
        bic, net = [], []
        for p in args.photos:
            hr = modcrop(photo(p), scale)
            lr = lr_of(hr, scale)
            bic.append(scores(bicubic_up(lr, scale), hr, scale))
            net.append(scores(upscale(model, lr), hr, scale))
        b, n = np.mean(bic, axis=0), np.mean(net, axis=0)
        print(
            f"| {name} | x{scale} | {params:,} | {b[0]:.2f} | {n[0]:.2f} | {n[0] - b[0]:+.2f} "
            f"| {b[1]:.4f} | {n[1]:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
