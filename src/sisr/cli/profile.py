"""``sisr profile --model M [--model ...]``: over :func:`sisr.analysis.profile.run_profile`."""

from __future__ import annotations

import argparse

from sisr.cli.argtypes import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr profile``."""
    p.description = (
        "Report what networks cost, one row each: parameters, multiply-adds (MACs) for one image whose "
        "SR output has --output-size (the input is that size divided by the scale, as SeemoRe's Table 1 "
        "counts), the selective scan's MACs in their own column (9·B·L·D·N per direction), latency (the "
        "median of --repeats runs after a warm-up) and peak extra memory (resident size in a fresh "
        "process on the CPU, torch.cuda.max_memory_allocated on CUDA)."
    )
    p.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        metavar="MODEL",
        help="a preset without weights (mma, mma-s, seemore-t, seemore-b, seemore-l; at --scale), a "
        "shipped model (see `sisr models`) or a checkpoint file; repeat for several rows",
    )
    p.add_argument(
        "-s",
        "--scale",
        type=int,
        default=None,
        help="upscaling factor of the presets (default: 4); checked against shipped models and files",
    )
    p.add_argument(
        "--output-size",
        default="1280x720",
        metavar="WxH",
        help="width x height of the SR output (default: %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        metavar="N",
        help="timed runs after the warm-up (default: %(default)s)",
    )
    p.add_argument(
        "--no-latency",
        action="store_true",
        help="report parameters and MACs only (counted without running the network: instant)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="also write the table as markdown")


def run(args: argparse.Namespace) -> int:
    """Prints the table row by row and writes the files asked for."""
    from sisr.analysis.profile import parse_size, run_profile

    run_profile(
        args.model,
        scale=args.scale,
        output_size=parse_size(args.output_size),
        device=args.device,
        json_path=args.json,
        markdown_path=args.markdown,
        repeats=args.repeats,
        timed=not args.no_latency,
    )
    return 0
