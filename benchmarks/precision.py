"""Output of every shipped model in bf16 (and fp16) against fp32 on the held-out photographs.

This is the measurement behind ``sisr.precision.GATE`` and the README's "Precision" table: each shipped
model upscales the held-out LR photographs (:mod:`sisr.heldout`, a centre crop of ``--crop`` LR pixels
per side to bound the time) in fp32 and under autocast in each other precision; both outputs are
rounded to uint8 and compared by PSNR over all RGB pixels. A precision passes for an architecture when
every output is finite and within ``GATE_DB`` (45 dB) of fp32.

The run uses autocast directly, without the device check, so bf16 is measured on a CPU without native
bf16 as well (oneDNN then emulates it: the numbers are bf16's, only slower). fp16 is measured only on
CUDA or MPS (``--device``): PyTorch's CPU fp16 is not what a GPU computes.

Usage: python benchmarks/precision.py [--models NAME ...] [--crop 96] [--device cpu]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from sisr.analysis.profile import machine
from sisr.checkpoint import load_model
from sisr.heldout import PHOTOS, lr_of, photo
from sisr.inference import upscale
from sisr.metrics import modcrop
from sisr.models import arch_of, scale_of
from sisr.precision import GATE_DB, autocast
from sisr.runtime import resolve_device
from sisr.shipped import shipped_models


def _psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _run(
    model: torch.nn.Module, lr: np.ndarray, precision: str, device: torch.device
) -> tuple[np.ndarray, bool]:
    """The uint8 output, and whether the float output was finite."""
    x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float().div_(255.0)[None].to(device)
    with torch.inference_mode(), autocast(precision, device):  # type: ignore[arg-type]
        y = model(x).float()
    finite = bool(torch.isfinite(y).all())
    out = y[0].clamp(0, 1).mul(255).round().byte().cpu().numpy().transpose(1, 2, 0)
    return out, finite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    parser.add_argument("--crop", type=int, default=96, help="LR centre crop side (0: whole photographs)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precisions = ["bf16"] + (["fp16"] if device.type in ("cuda", "mps") else [])
    torch.set_num_threads(1)
    where = machine(device)
    print(
        f"{where}, torch {torch.__version__}, 1 thread; LR crop {args.crop or 'none'}; "
        f"photos: {', '.join(args.photos)}"
    )
    if device.type == "cpu":
        print("fp16: not measured (CPU only)")
    lrs = {}
    worst: dict[tuple[str, str], float] = {}
    print(f"\n| model | precision | min PSNR vs fp32 (dB) | mean (dB) | finite | >= {GATE_DB:g} dB |")
    print("|---|---|---|---|---|---|")
    for name in args.models or list(shipped_models()):
        model = load_model(name, device=str(device))
        scale = scale_of(model)
        arch = arch_of(model)
        for p in args.photos:
            if (p, scale) not in lrs:
                lr = lr_of(modcrop(photo(p), scale), scale)
                if args.crop:
                    h, w = lr.shape[:2]
                    top, left = max(0, (h - args.crop) // 2), max(0, (w - args.crop) // 2)
                    lr = np.ascontiguousarray(lr[top : top + args.crop, left : left + args.crop])
                lrs[p, scale] = lr
        ref = {p: upscale(model, lrs[p, scale]) for p in args.photos}
        for precision in precisions:
            scores, finite = [], True
            for p in args.photos:
                out, ok = _run(model, lrs[p, scale], precision, device)
                finite &= ok
                scores.append(_psnr_uint8(out, ref[p]))
            low = min(scores)
            worst[arch, precision] = min(worst.get((arch, precision), math.inf), low if finite else -math.inf)
            ok = finite and low >= GATE_DB
            print(
                f"| {name} | {precision} | {low:.1f} | {np.mean(scores):.1f} | "
                f"{'yes' if finite else 'no'} | {'yes' if ok else 'no'} |",
                flush=True,
            )
    print("\nGate (architecture: allowed precisions):")
    for arch in sorted({a for a, _ in worst}):
        allowed = ["fp32"] + [p for p in precisions if worst[arch, p] >= GATE_DB]
        print(f"  {arch!r}: {tuple(allowed)},")


if __name__ == "__main__":
    main()
