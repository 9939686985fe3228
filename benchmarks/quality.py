"""Quality of every shipped model, and of bicubic, on held-out photographs (the README's quality table).

The photographs are scikit-image's bundled ones (``skimage.data``), none of which is in the training set;
the protocol is the papers' (see :mod:`sisr.heldout`). It also checks that each model's file records
the numbers measured here. A second table gives each model's gain over bicubic on each photograph.

Usage: python benchmarks/quality.py [--models NAME ...] [--photos NAME ...]
"""

from __future__ import annotations

import argparse

from sisr.checkpoint import load_model
from sisr.heldout import PHOTOS, mean_quality, measure_each
from sisr.models import scale_of
from sisr.shipped import shipped_model_info, shipped_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    args = parser.parse_args()
    shipped = shipped_models()
    names = args.models or list(shipped)
    if not names:
        raise SystemExit("no shipped models: nothing to evaluate")

    print(f"Held-out photographs (skimage.data): {', '.join(args.photos)}\n")
    print("| model | scale | params | PSNR-Y bicubic | PSNR-Y model | gain | SSIM-Y bicubic | SSIM-Y model |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    stale = []
    gains: dict[str, list[float]] = {}
    for name in names:
        model = load_model(name)
        scale = scale_of(model)
        params = sum(p.numel() for p in model.parameters())
        each = measure_each(model, scale, args.photos)
        gains[name] = [p.gain for p in each]
        q = mean_quality(each)
        print(
            f"| {name} | x{scale} | {params:,} | {q.bicubic_psnr_y:.2f} | {q.psnr_y:.2f} | {q.gain:+.2f} "
            f"| {q.bicubic_ssim_y:.4f} | {q.ssim_y:.4f} |",
            flush=True,
        )
        recorded = shipped_model_info(name).quality if name in shipped else None
        if recorded and recorded["photos"] == list(q.photos) and abs(recorded["psnr_y"] - q.psnr_y) > 0.01:
            stale.append(f"{name}: file records {recorded['psnr_y']:.2f} dB, measured {q.psnr_y:.2f} dB")
    print(f"\nGain over bicubic per photograph (PSNR-Y, dB):\n\n| model | {' | '.join(args.photos)} |")
    print(f"|---|{'---:|' * len(args.photos)}")
    for name, row in gains.items():
        print(f"| {name} | {' | '.join(f'{g:+.2f}' for g in row)} |")
    for line in stale:
        print(f"warning: {line}")


if __name__ == "__main__":
    main()
