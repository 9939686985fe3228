"""``sisr lam HR_IMAGE --model M [--model M2 ...] --pos H W``: over :func:`sisr.analysis.lam.run_lam`."""

from __future__ import annotations

import argparse

from sisr.cli.argtypes import add_precision_argument, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr lam``."""
    p.description = (
        "Local Attribution Maps (Gu & Dong, CVPR 2021): which LR pixels each network uses to draw the "
        "edges inside a window of its output, and the Diffusion Index DI = (1 - Gini) * 100 of that map "
        "(higher: more pixels contribute). Computed as the reference code LAM_Demo does, so that the "
        "numbers compare with published ones. The network runs on the whole image (never tiled), once "
        "per path step, forwards and backwards: expect about FOLD network evaluations per model."
    )
    p.add_argument(
        "hr_image", metavar="HR_IMAGE", help="the HR image (8-bit); cropped to a multiple of the scale"
    )
    p.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        metavar="MODEL",
        help="a shipped model (see `sisr models`) or a checkpoint file; repeat to compare several",
    )
    p.add_argument(
        "--pos",
        nargs=2,
        type=int,
        required=True,
        metavar=("H", "W"),
        help="top-left corner of the window, in HR (= SR) pixels: row, then column",
    )
    p.add_argument("--window", type=positive_int, default=16, metavar="N", help="window side (default: 16)")
    p.add_argument(
        "--sigma", type=float, default=1.2, help="sigma of the most blurred image of the path (default: 1.2)"
    )
    p.add_argument("--fold", type=positive_int, default=50, metavar="N", help="path steps (default: 50)")
    p.add_argument(
        "--kernel", type=positive_int, default=9, metavar="N", help="Gaussian kernel side, odd (default: 9)"
    )
    p.add_argument(
        "--lr",
        choices=("pil", "matlab"),
        default="pil",
        help="how the LR image is made: PIL bicubic as the reference, or MATLAB bicubic as the papers' "
        "benchmarks (default: pil)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write the figures here: window.png, NAME_map.png, NAME_kde.png, NAME_blend.png per model, "
        "and comparison.png for several models",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        help='write {"models": [{"model", "diffusion_index", "gini"}], "settings": {...}}',
    )
    p.add_argument(
        "--map",
        metavar="PATH.npy",
        help="write each normalised map (float32, LR-sized); with several models as PATH_NAME.npy",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="path steps per forward and backward pass; memory grows with it (default: 8)",
    )
    add_precision_argument(p)


def run(args: argparse.Namespace) -> int:
    """Prints one line per model: its DI, Gini and the settings."""
    from sisr.analysis.lam import LamSettings, run_lam

    settings = LamSettings(
        pos=(args.pos[0], args.pos[1]),
        window=args.window,
        sigma=args.sigma,
        fold=args.fold,
        kernel=args.kernel,
        lr=args.lr,
    )
    run_lam(
        args.hr_image,
        args.model,
        settings,
        out_dir=args.out,
        json_path=args.json,
        map_path=args.map,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        echo=lambda line: print(line, flush=True),
    )
    return 0
