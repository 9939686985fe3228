"""``sisr prepare lr|degrade|subimages|lmdb``: over :func:`sisr.prepare.make_lr`,
:func:`~sisr.prepare.make_degraded`, :func:`~sisr.prepare.extract_subimages` and
:func:`~sisr.prepare.make_lmdb`."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from sisr.cli import warn
from sisr.cli.argtypes import non_negative_int, positive_int
from sisr.errors import SisrError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the subcommands ``lr``, ``degrade``, ``subimages`` and ``lmdb``; each sets ``args.job``."""
    p.description = "Prepare super-resolution datasets."
    commands = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    lr = commands.add_parser("lr", help="make bicubic LR images OUT_DIR/X{s}/{name}x{s}.png")
    lr.add_argument("hr_dir", metavar="HR_DIR", help="folder of HR images")
    lr.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    lr.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="scales (default: 2 3 4)")
    lr.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    lr.set_defaults(job=_lr)

    deg = commands.add_parser(
        "degrade",
        help="make a fixed degraded LR set OUT_DIR/X{s}/{name}x{s}.png (Real-ESRGAN's degradations)",
    )
    deg.add_argument("hr_dir", metavar="HR_DIR", help="folder of HR images")
    deg.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    deg.add_argument("--scale", type=positive_int, required=True, help="downscaling factor")
    deg.add_argument("--seed", type=non_negative_int, default=0, help="seed of the set (default: 0)")
    deg.add_argument(
        "--settings",
        metavar="FILE.yml",
        help="YAML mapping of degradation settings (the keys of a dataset's degradation block); "
        "default: Real-ESRGAN's x4plus recipe",
    )
    deg.add_argument("--workers", type=positive_int, default=1, help="processes (default: 1)")
    deg.set_defaults(job=_degrade)

    sub = commands.add_parser("subimages", help="cut images into overlapping squares (BasicSR tiling)")
    sub.add_argument("in_dir", metavar="IN_DIR", help="folder of images")
    sub.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    sub.add_argument("--crop-size", type=int, default=480, help="side of the squares (default: 480)")
    sub.add_argument("--step", type=int, default=240, help="stride between squares (default: 240)")
    sub.add_argument("--thresh-size", type=int, default=0, help="edge remainder to ignore (default: 0)")
    sub.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    sub.add_argument(
        "--keep-scale-suffix", action="store_true", help="keep a trailing x2/x3/x4 in the output names"
    )
    sub.set_defaults(job=_subimages)

    pack = commands.add_parser("lmdb", help="pack a folder of images into a BasicSR-compatible LMDB")
    pack.add_argument("in_dir", metavar="IN_DIR", help="folder of images")
    pack.add_argument("out_path", metavar="OUT.lmdb", help="LMDB folder to create")
    pack.add_argument("--compress-level", type=int, default=1, help="PNG compression 0-9 (default: 1)")
    pack.set_defaults(job=_lmdb)


def run(args: argparse.Namespace) -> int:
    """Runs the chosen subcommand."""
    args.job(args)
    return 0


def _lr(args: argparse.Namespace) -> None:
    from sisr.prepare import make_lr

    summary = make_lr(args.hr_dir, args.out_dir, args.scales, workers=args.workers)
    scales = ", ".join(f"x{s}" for s in sorted(set(args.scales)))
    print(f"wrote {summary.written} LR images ({summary.images} HR images at {scales}) to {args.out_dir}")


def _degrade(args: argparse.Namespace) -> None:
    from sisr.prepare import make_degraded

    settings = None
    if args.settings is not None:
        from sisr.config import from_dict, parse_yaml
        from sisr.data.degradations import Degradation

        try:
            text = Path(args.settings).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SisrError(f"cannot read {args.settings}: {getattr(e, 'strerror', None) or e}") from None
        try:
            settings = from_dict(Degradation, parse_yaml(text, args.settings), path="degradation")
        except SisrError as e:
            raise SisrError(f"{args.settings}: {e}") from None
    summary = make_degraded(
        args.hr_dir, args.out_dir, scale=args.scale, seed=args.seed, settings=settings, workers=args.workers
    )
    print(f"wrote {summary.written} degraded LR images (x{args.scale}, seed {args.seed}) to {args.out_dir}")


def _subimages(args: argparse.Namespace) -> None:
    from sisr.prepare import PrepareWarning, extract_subimages

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrepareWarning)
        summary = extract_subimages(
            args.in_dir,
            args.out_dir,
            crop_size=args.crop_size,
            step=args.step,
            thresh_size=args.thresh_size,
            workers=args.workers,
            strip_scale_suffix=not args.keep_scale_suffix,
        )
    for w in caught:
        warn(str(w.message))
    left_out = f", {len(summary.skipped)} left out" if summary.skipped else ""
    print(f"wrote {summary.written} sub-images from {summary.images} images{left_out} to {args.out_dir}")


def _lmdb(args: argparse.Namespace) -> None:
    from sisr.prepare import make_lmdb

    summary = make_lmdb(args.in_dir, args.out_path, compress_level=args.compress_level)
    print(f"wrote {summary.written} images to {args.out_path}")
