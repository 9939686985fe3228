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
from sisr.errors import SisrError
from sisr.imageio import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, format_for_path, read_image, write_image

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
            "Super-resolve images. With a single input file, OUTPUT is the output file and its extension "
            "picks the format, unless OUTPUT is a folder or ends with '/'. With several inputs or a folder, "
            "OUTPUT is a folder (created if needed) and "
            f"every result keeps its input's file name. Folders contribute their {extensions} files "
            "(not recursively, not hidden ones, sorted by name). A file that fails is reported on one line "
            "and skipped; no partial output is ever left, and the exit status is 1 if anything failed."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="output file or folder")
    p.add_argument(
        "-m",
        "--model",
        required=True,
        metavar="MODEL",
        help="checkpoint (.pth or .safetensors, official or sisr) or the name of a shipped model",
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
        help="overlap of neighbouring tiles in input pixels (default: 16, at most half the tile)",
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
    jobs = _plan_upscale(args.inputs, args.output)

    # Imported here so that `sisr --help` does not pay for importing torch.
    from sisr.checkpoint import load_model
    from sisr.inference import upscale

    model = load_model(args.model, device=args.device)
    progress = _Progress(len(jobs))
    failures = 0
    for source, target in jobs:
        progress.show(source.name)
        try:
            image = read_image(source, max_pixels=args.max_pixels)
            try:
                result = upscale(model, image.pixels, tile=args.tile, overlap=overlap)
            except MemoryError:
                raise SisrError(f"{source}: out of memory; try a smaller --tile") from None
            except RuntimeError as e:  # allocation failures of torch
                if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
                    raise
                raise SisrError(f"{source}: out of memory; try a smaller --tile") from None
            _make_folder(target.parent)
            write_image(target, result)
        except SisrError as e:
            progress.clear()
            _error(str(e))
            failures += 1
        progress.step()
    progress.done()
    if failures and len(jobs) > 1:
        _error(f"{failures} of {len(jobs)} images failed")
    return 1 if failures else 0


def _plan_upscale(inputs: Sequence[str], output: str) -> list[tuple[Path, Path]]:
    """Returns (input file, output file) pairs, checking everything that can be checked up front."""
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
