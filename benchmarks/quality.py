"""Quality of every shipped model, and of bicubic, on held-out photographs (the README's quality table).

The photographs are scikit-image's bundled ones (``skimage.data``), none of which is in the training set;
the protocol is the papers' (see :mod:`sisr.heldout`). It also checks that each model's file records
the numbers measured here. A second table gives each model's gain over bicubic on each photograph.

The degraded table scores models on the same photographs whose LR image was degraded further
(:data:`sisr.heldout.LR_DEGRADATIONS`: JPEG q90/q75/q50, Gaussian noise sigma 5 and 10, a mild blur), as
photos from the web are: the clean SeemoRe-T models and the real-world ``-real`` ones, each against
bicubic on the same degraded LR image, and checks the targets of the ``-real`` models.

Usage: python benchmarks/quality.py [--models NAME ...] [--photos NAME ...] [--degraded-models NAME ...]
[--degraded-only] [--param-key params]

``--degraded-models`` also takes checkpoint files, such as a training run's ``models/net_g_N.pth``
(its EMA weights, or with ``--param-key params`` its raw ones); ``--degraded-only`` skips the clean
tables, to follow a run.
"""

from __future__ import annotations

import argparse

from sisr.checkpoint import load_model
from sisr.heldout import LR_DEGRADATIONS, PHOTOS, mean_quality, measure_each
from sisr.models import scale_of
from sisr.shipped import shipped_model_info, shipped_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    parser.add_argument(
        "--degraded-models",
        nargs="*",
        help="models of the degraded table, shipped names or checkpoint files "
        "(default: seemore-t-x4, seemore-t-x2 and every -real model)",
    )
    parser.add_argument("--degraded-only", action="store_true", help="only the degraded table")
    parser.add_argument(
        "--param-key",
        choices=("params_ema", "params"),
        default=None,
        help="weights of checkpoint files given to --degraded-models (default: EMA where there is one)",
    )
    args = parser.parse_args()
    if args.degraded_only:
        degraded_table(args.degraded_models, args.photos, param_key=args.param_key)
        return
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
    degraded_table(args.degraded_models, args.photos, param_key=args.param_key)
    for line in stale:
        print(f"warning: {line}")


# Targets of issue 17 for the real-world x4 model: (degradation, least gain over bicubic in dB).
REAL_TARGETS = {"seemore-t-x4-real": (("jpeg75", 1.0), ("jpeg50", 0.7), ("clean", 0.8))}


def degraded_table(models: list[str] | None, photos: list[str], *, param_key: str | None = None) -> None:
    """Prints the gain over bicubic of each model under each LR degradation, and the targets.

    Args:
        models: Shipped names or checkpoint files; None: the clean SeemoRe-T models and the -real ones.
        photos: Names from ``sisr.heldout.PHOTOS``.
        param_key: For checkpoint files: "params_ema", "params" or None (EMA where there is one).
    """
    shipped = shipped_models()
    if models is None:
        models = [n for n in ("seemore-t-x4", "seemore-t-x2") if n in shipped]
        models += [n for n in shipped if n.endswith("-real")]
    if not models:
        return
    names = list(LR_DEGRADATIONS)
    print("\nDegraded LR (MATLAB bicubic, then each degradation): gain over bicubic, PSNR-Y dB\n")
    print(f"| model | {' | '.join(names)} |")
    print(f"|---|{'---:|' * len(names)}")
    bicubic: dict[int, dict[str, float]] = {}  # scale -> degradation -> bicubic's PSNR-Y, same for all
    gains: dict[str, dict[str, float]] = {}
    for name in models:
        model = load_model(name, param_key=None if name in shipped else param_key)
        scale = scale_of(model)
        row = {}
        for d in names:
            q = mean_quality(measure_each(model, scale, photos, degradation=d))
            row[d] = q.gain
            bicubic.setdefault(scale, {})[d] = q.bicubic_psnr_y
        gains[name] = row
        print(f"| {name} (x{scale}) | {' | '.join(f'{row[d]:+.2f}' for d in names)} |", flush=True)
    for scale, per in bicubic.items():
        print(f"| bicubic x{scale}, PSNR-Y | {' | '.join(f'{per[d]:.2f}' for d in names)} |")
    for name, targets in REAL_TARGETS.items():
        if name not in gains:
            print(f"- {name}: not shipped, targets not checked")
            continue
        for d, least in targets:
            verdict = "meets" if gains[name][d] >= least else "misses"
            print(f"- {name} on {d}: {gains[name][d]:+.2f} dB ({verdict} the target of +{least:g} dB)")


if __name__ == "__main__":
    main()
