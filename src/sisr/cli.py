"""The ``sisr`` command line.

Each subcommand is a pair of small functions: ``_add_<name>(subparsers)`` declares its arguments and
``_run_<name>(args) -> int`` carries it out. :func:`main` parses, dispatches and turns every
:class:`~sisr.errors.SisrError` into one line ``sisr: error: <message>`` on stderr and exit status 1,
without a traceback. Usage mistakes (unknown option, missing argument) are argparse's: usage and a
message on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sisr import __version__, evaluate, prepare, train
from sisr.argtypes import non_negative_int, positive_int
from sisr.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    check_writable,
    format_for_path,
    read_image,
    write_image,
)
from sisr.errors import SisrError
from sisr.runtime import reuse_freed_memory

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 after a user error, 2 for a usage error, 130 when interrupted.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version or a usage error; argparse has printed the message
        return e.code if isinstance(e.code, int) else 2
    reuse_freed_memory()  # a command runs and exits: keep freed tensors' memory for the next ones
    try:
        return args.run(args)
    except SisrError as e:
        _error(str(e))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sisr", description="Single-image super-resolution with MMA and SeemoRe."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_upscale(subparsers)
    _add_models(subparsers)
    train.add_train_command(subparsers)
    evaluate.add_evaluate_command(subparsers)
    evaluate.add_test_command(subparsers)
    prepare.add_commands(subparsers.add_parser("prepare", help="build training and benchmark datasets"))
    return parser


def _error(message: str) -> None:
    # One line whatever the message holds, so that scripts can grep the output.
    print(f"sisr: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# sisr upscale


def _add_upscale(subparsers: argparse._SubParsersAction) -> None:
    extensions = "/".join(ext[1:] for ext in IMAGE_EXTENSIONS)
    p = subparsers.add_parser(
        "upscale",
        help="super-resolve images",
        description=(
            "Super-resolve images and print where each result went. With a single input file, OUTPUT is "
            "the output file and its extension picks the format, unless OUTPUT is a folder or ends with "
            "'/'; without -o the result goes next to the input as NAME_xS.EXT. With several inputs or a "
            "folder, OUTPUT is a folder (created if needed) and "
            f"every result keeps its input's file name. Folders contribute their {extensions} files "
            "(not recursively, not hidden ones, sorted by name). A file that fails is reported on one line "
            "and skipped; no partial output is ever left, and the exit status is 1 if anything failed."
        ),
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
        help="overlap of neighbouring tiles in input pixels, below the tile (default: 16 or half the tile)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse input images with more pixels than this (default: %(default)s)",
    )
    p.set_defaults(run=_run_upscale)


def _run_upscale(args: argparse.Namespace) -> int:
    overlap = args.overlap
    if overlap is None:
        overlap = 16 if args.tile is None else min(16, args.tile // 2)
    elif args.tile is not None and overlap >= args.tile:
        raise SisrError(f"--overlap ({overlap}) must be smaller than --tile ({args.tile})")
    # Imported here so that `sisr --help` does not pay for importing torch.
    from sisr.checkpoint import load_model
    from sisr.inference import upscale_image
    from sisr.models import scale_of
    from sisr.shipped import choose_model

    sources = _collect_sources(args.inputs)  # missing inputs fail before the model is loaded
    if args.output is None and (len(args.inputs) > 1 or Path(args.inputs[0]).is_dir()):
        raise SisrError("several inputs or a folder need -o OUTPUT_FOLDER")
    name = choose_model(args.model, args.scale)
    model = load_model(name, device=args.device)
    scale = scale_of(model)
    if args.scale is not None and scale != args.scale:
        raise SisrError(f"{name} upscales x{scale}, not x{args.scale} (--scale)")
    output = args.output
    if output is None:
        source = Path(args.inputs[0])
        output = str(source.with_name(f"{source.stem}_x{scale}{source.suffix}"))
    jobs = _plan_jobs(args.inputs, sources, output)

    progress = _Progress(len(jobs))
    failures = 0
    for source, target in jobs:
        progress.show(source.name)
        try:
            image = read_image(source, max_pixels=args.max_pixels, all_frames=True)
            # Before the network's long run:
            check_writable(target, channels=image.pixels.shape[2], frames=len(image.frames))
            try:
                result = upscale_image(model, image, tile=args.tile, overlap=overlap)
            except MemoryError:
                raise SisrError(f"{source}: out of memory; try a smaller --tile") from None
            except RuntimeError as e:  # allocation failures of torch
                if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
                    raise
                raise SisrError(f"{source}: out of memory; try a smaller --tile") from None
            _make_folder(target.parent)
            write_image(target, result)
            progress.clear()
            print(f"{source} -> {target} (x{scale}, {name})", flush=True)
        except SisrError as e:
            progress.clear()
            _error(str(e))
            failures += 1
        progress.step()
    progress.done()
    if failures and len(jobs) > 1:
        _error(f"{failures} of {len(jobs)} images failed")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------------------
# sisr models


def _add_models(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the shipped models",
        description=(
            "List the models shipped with sisr: scale, parameters, file size, training iterations and "
            "the PSNR-Y measured on held-out photographs (scikit-image's, not in the training set) "
            "against bicubic on the same inputs (benchmarks/quality.py re-measures it)."
        ),
    )
    p.set_defaults(run=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from sisr.shipped import DEFAULT_FAMILY, shipped_model_info, shipped_models

    names = list(shipped_models())
    if not names:
        raise SisrError("no models are shipped with this installation")
    rows = [("name", "arch", "scale", "params", "size", "iterations", "PSNR-Y", "bicubic", "gain")]
    infos = [shipped_model_info(name) for name in names]
    for m in infos:
        q = m.quality
        rows.append(
            (
                m.name + (" (default)" if m.name == f"{DEFAULT_FAMILY}-x4" else ""),
                m.arch,
                f"x{m.scale}",
                f"{m.params:,}",
                f"{m.size / 1024:.0f} KiB",
                "?" if m.iterations is None else f"{m.iterations:,}",
                "?" if q is None else f"{q['psnr_y']:.2f}",
                "?" if q is None else f"{q['bicubic_psnr_y']:.2f}",
                "?" if q is None else f"{q['psnr_y'] - q['bicubic_psnr_y']:+.2f} dB",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(cells).rstrip())
    measured = [m.quality for m in infos if m.quality]
    if measured:
        print(f"PSNR-Y: mean over held-out photographs ({', '.join(measured[0]['photos'])}), crop = scale")
    return 0


def _collect_sources(inputs: Sequence[str]) -> list[Path]:
    """The image files that ``inputs`` name, folders expanded; missing or empty inputs fail."""
    sources: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            # Hidden files are skipped: "._name.jpg" resource forks, editors' and other tools' temporaries.
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
            )
            if not found:
                raise SisrError(f"{path}: folder holds no {'/'.join(IMAGE_EXTENSIONS)} files")
            sources.extend(found)
        elif path.is_file():
            sources.append(path)
        elif path.exists():
            raise SisrError(f"{path}: not a file or folder")
        else:
            raise SisrError(f"{path}: no such file or folder")
    return sources


def _plan_jobs(inputs: Sequence[str], sources: list[Path], output: str) -> list[tuple[Path, Path]]:
    """Returns (input file, output file) pairs, checking everything that can be checked up front."""
    out = Path(output)
    names_folder = output.endswith(("/", os.sep)) or out.is_dir()
    single = len(inputs) == 1 and not Path(inputs[0]).is_dir() and not names_folder
    if single:
        jobs = [(sources[0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise SisrError(f"{out}: exists and is not a folder (several inputs need an output folder)")
        jobs = [(source, out / source.name) for source in sources]

    seen: dict[str, Path] = {}
    for source, target in jobs:
        format_for_path(target)  # an unknown extension fails now, before any work
        key = os.path.normcase(os.path.abspath(target))
        if key in seen:
            raise SisrError(f"{target}: would be written for both {seen[key]} and {source}")
        seen[key] = source
        if target.exists() and os.path.samefile(source, target):
            raise SisrError(f"{target}: output would overwrite its input")
    return jobs


class _Progress:
    """A one-line progress display on stderr, shown for several images when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.enabled = total > 1 and sys.stderr.isatty()

    def show(self, name: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{self.count + 1}/{self.total}] {name}")
            sys.stderr.flush()

    def step(self) -> None:
        self.count += 1

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{self.count}/{self.total}] done\n")
            sys.stderr.flush()


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SisrError(f"{folder}: cannot create folder: {e.strerror or e}") from None
