"""``sisr evaluate -m MODEL --data DIR...``: over :func:`sisr.evaluate.evaluate_benchmarks`."""

from __future__ import annotations

import argparse

from sisr.cli.argtypes import add_precision_argument, non_negative_int, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr evaluate``."""
    p.description = (
        "Super-resolve benchmark sets and print PSNR and SSIM as the papers compute them: output "
        "rounded to 8 bits, 'scale' border pixels cropped, luma (BT.601) only. A set is a folder "
        "with HR/ and LR_bicubic/X<s>/ (<name>x<s>.png), or GTmod12/ and LRbicx<s>/; without LR "
        "images for the scale, they are made from HR with MATLAB's bicubic imresize."
    )
    p.add_argument("-m", "--model", required=True, metavar="MODEL", help="checkpoint or shipped model name")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR", help="benchmark folders")
    p.add_argument("--scale", type=positive_int, default=None, help="check the model's scale (default: it)")
    p.add_argument(
        "--crop-border", type=non_negative_int, default=None, metavar="N", help="default: the scale"
    )
    p.add_argument("--no-y", action="store_true", help="score RGB instead of the luma")
    add_run_options(p)
    p.add_argument("--save", default=None, metavar="DIR", help="write SR images to DIR/<set>/<name>.png")
    p.add_argument("--json", default=None, metavar="PATH", help="also write all numbers as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="also write the table as Markdown")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``evaluate`` and ``test``."""
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="N",
        help="run up to N images of equal size together; the numbers do not change (default: 1)",
    )
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the outputs of the 8 flips/rotations (the papers' '+' results)",
    )
    p.add_argument(
        "--tile", type=positive_int, default=None, metavar="N", help="run in N x N tiles (default: whole)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    add_precision_argument(p)


def run(args: argparse.Namespace) -> int:
    """Prints the table, and writes the JSON and Markdown reports when asked."""
    from sisr.evaluate import evaluate_benchmarks

    evaluate_benchmarks(
        args.model,
        args.data,
        expect_scale=args.scale,
        crop_border=args.crop_border,
        y_channel=not args.no_y,
        batch_size=args.batch_size,
        self_ensemble=args.self_ensemble,
        tile=args.tile,
        device=args.device,
        precision=args.precision,
        save_dir=args.save,
        json_path=args.json,
        markdown_path=args.markdown,
    )
    return 0
