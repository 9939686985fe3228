"""``sisr upscale INPUT... [-o OUTPUT]``: over :func:`sisr.upscaling.upscale_files`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sisr.cli import error
from sisr.cli.argtypes import add_inference_device_arguments, non_negative_int, positive_int
from sisr.data.images import IMAGE_EXTENSIONS
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
        "and skipped; no partial output is ever left, and the exit status is 1 if anything failed. "
        "Under torchrun the processes share the files (round-robin in the sorted plan), each on its own "
        "device (cuda:LOCAL_RANK with --device cuda), each printing its own lines; rank 0 prints the total."
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
        "--real",
        action="store_true",
        help="take the family's model trained for real-world photos (JPEG, noise, blur): NAME-xS-real",
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
    add_inference_device_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Upscales, printing ``INPUT -> OUTPUT (xS, MODEL)`` per image and one error line per failure.

    Under ``torchrun`` every process prints the lines of its own share of the files, rank 0 prints the
    total, and every process exits 1 if a file failed on any of them.
    """
    if args.overlap is not None:
        if args.tile is None:
            raise SisrError("--overlap needs --tile (without it the whole image is processed at once)")
        if args.overlap >= args.tile:
            raise SisrError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
    from sisr.runtime import init_distributed
    from sisr.upscaling import UpscaleResult, upscale_files

    cuda = args.device.startswith("cuda")
    world = init_distributed(backend="nccl" if cuda else "gloo")
    device = f"cuda:{world.local_rank}" if world.enabled and args.device == "cuda" else args.device
    progress = _Progress()

    def report(result: UpscaleResult) -> None:
        progress.clear()
        if result.error is None:
            print(f"{result.source} -> {result.target} (x{result.scale}, {result.model})", flush=True)
        else:
            error(str(result.error))
        progress.count += 1

    try:
        setup_error: SisrError | None = None
        try:
            results = upscale_files(
                args.inputs,
                args.output,
                model=args.model,
                scale=args.scale,
                real=args.real,
                tile=args.tile,
                overlap=args.overlap,
                device=device,
                precision=args.precision,
                max_pixels=args.max_pixels,
                rank=world.rank,
                world_size=world.world_size,
                on_start=progress.show,
                on_result=report,
            )
        except SisrError as e:
            if not world.enabled:
                raise
            setup_error, results = e, []  # the others still wait for this process's counts below
        progress.done()
        failures = sum(result.error is not None for result in results)
        total = len(results)
        if world.enabled:
            failures, total, setups = _sum_over_ranks([failures, total, setup_error is not None], cuda=cuda)
            if setup_error is not None:
                raise setup_error
            if setups:  # another process stopped before its work: its files were not done
                raise SisrError(f"{setups} of {world.world_size} processes failed before upscaling")
            if world.main:
                done = total - failures
                print(f"{done} of {total} images upscaled by {world.world_size} processes", flush=True)
        if failures and total > 1 and world.main:
            error(f"{failures} of {total} images failed")
        return 1 if failures else 0
    finally:
        if world.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


def _sum_over_ranks(counts: list[int], *, cuda: bool) -> list[int]:
    """Sums counts over all processes (every process gets the sums)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(counts, dtype=torch.int64, device="cuda" if cuda else "cpu")
    dist.all_reduce(tensor)
    return [int(v) for v in tensor.tolist()]


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
