"""``sisr upscale INPUT... [-o OUTPUT]``: over :func:`sisr.upscaling.upscale_files`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sisr.cli import error
from sisr.cli.argtypes import add_precision_argument, non_negative_int, positive_int
from sisr.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from sisr.errors import SisrError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr upscale``."""
    extensions = "/".join(ext[1:] for ext in IMAGE_EXTENSIONS)
    p.description = (
        "Super-resolve images and print where each result went. With a single input file, OUTPUT is "
        "the output file and its extension picks the format, unless OUTPUT is a folder or ends with "
        "'/'; without -o the result goes next to the input as NAME_xS.EXT. With several inputs or a "
        "folder, OUTPUT is a folder (created if needed) and "
        f"every result keeps its input's file name. Folders contribute their {extensions} files "
        "(not recursively, not hidden ones, sorted by name). A file that fails is reported on one line "
        "and skipped; no partial output is ever left, and the exit status is 1 if anything failed."
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        help="output file or folder (default for one input file: NAME_xS.EXT beside it)",
    )
    p.add_argument(
        "-m",
        "--model",
        metavar="MODEL",
        help=(
            "a shipped model (see `sisr models`), a family of them picked by --scale (seemore-t, mma-s), "
            "or a checkpoint file (.pth or .safetensors, official or sisr) (default: seemore-t)"
        ),
    )
    p.add_argument(
        "-s",
        "--scale",
        type=int,
        choices=(2, 3, 4),
        default=None,
        help="upscaling factor: picks the model of the family; checked against a given file (default: 4)",
    )
    p.add_argument(
        "--tile",
        type=positive_int,
        default=None,
        metavar="N",
        help="process in N x N tiles to bound memory (default: whole image at once)",
    )
    p.add_argument(
        "--overlap",
        type=non_negative_int,
        default=None,
        metavar="M",
        help="overlap of neighbouring tiles in input pixels, below the tile; needs --tile "
        "(default: 16 or half the tile)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    add_precision_argument(p)
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse input images with more pixels than this (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Upscales, printing ``INPUT -> OUTPUT (xS, MODEL)`` per image and one error line per failure."""
    if args.overlap is not None:
        if args.tile is None:
            raise SisrError("--overlap needs --tile (without it the whole image is processed at once)")
        if args.overlap >= args.tile:
            raise SisrError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
    from sisr.upscaling import UpscaleResult, upscale_files

    progress = _Progress()

    def report(result: UpscaleResult) -> None:
        progress.clear()
        if result.error is None:
            print(f"{result.source} -> {result.target} (x{result.scale}, {result.model})", flush=True)
        else:
            error(str(result.error))
        progress.count += 1

    results = upscale_files(
        args.inputs,
        args.output,
        model=args.model,
        scale=args.scale,
        tile=args.tile,
        overlap=args.overlap,
        device=args.device,
        precision=args.precision,
        max_pixels=args.max_pixels,
        on_start=progress.show,
        on_result=report,
    )
    progress.done()
    failures = sum(result.error is not None for result in results)
    if failures and len(results) > 1:
        error(f"{failures} of {len(results)} images failed")
    return 1 if failures else 0


class _Progress:
    """A one-line progress display on stderr, shown for several images when stderr is a terminal."""

    def __init__(self) -> None:
        self.total = 0  # known once the first image starts
        self.count = 0
        self.enabled = False

    def show(self, index: int, total: int, source: Path) -> None:
        self.total, self.count = total, index
        self.enabled = total > 1 and sys.stderr.isatty()
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{index + 1}/{total}] {source.name}")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{self.count}/{self.total}] done\n")
            sys.stderr.flush()
