"""Upscaling image files and folders with a shipped model or a checkpoint (what ``sisr upscale`` does).

:func:`upscale_files` plans every output before loading the network (missing inputs, unknown output
extensions, two inputs written to one file and outputs that would overwrite their input all fail first),
then reads, upscales and writes each file atomically. A file that fails is reported and skipped; the others
are still written.

Several processes (``torchrun``) share the work with ``rank``/``world_size``: every process plans and checks
all the outputs, so a bad one fails before any work and on every process alike, then each takes its share
of the plan (:func:`shard_jobs`, round-robin by position) and writes only those files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sisr.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    check_writable,
    format_for_path,
    read_image,
    write_image,
)
from sisr.errors import SisrError
from sisr.precision import Precision, check_model_precision

__all__ = ["UpscaleResult", "collect_sources", "plan_jobs", "shard_jobs", "upscale_files"]


@dataclass(frozen=True)
class UpscaleResult:
    """One input file and what became of it."""

    source: Path
    target: Path
    scale: int
    model: str  # the shipped model's name or the checkpoint path, as given
    error: SisrError | None = None  # None: `target` was written


def upscale_files(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    model: str | None = None,
    scale: int | None = None,
    real: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    device: str = "cpu",
    precision: Precision = "fp32",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    rank: int = 0,
    world_size: int = 1,
    on_start: Callable[[int, int, Path], None] | None = None,
    on_result: Callable[[UpscaleResult], None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> list[UpscaleResult]:
    """Upscales image files and folders of images.

    With a single input file, `output` is the output file and its extension picks the format, unless it
    is a folder or ends with ``/``; None writes ``NAME_xS.EXT`` beside the input. With several inputs or a
    folder, `output` is a folder (created if needed) and every result keeps its input's file name. Folders
    contribute their image files (not recursively, not hidden ones, sorted by name).

    Args:
        inputs: Image files and folders.
        output: Output file or folder (see above).
        model: A shipped model, a family of them picked by `scale`, or a checkpoint file; None: the
            default family.
        scale: Picks the model of a family; checked against a given file.
        real: Take the family's model for real-world inputs (``NAME-xS-real``, see :mod:`sisr.shipped`).
        tile: Tile size in input pixels, or None for whole images.
        overlap: Overlap of neighbouring tiles (see :func:`sisr.inference.upscale`).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`sisr.precision`); checked before any file.
        max_pixels: Images with more pixels are refused.
        rank: This process's share of the files when `world_size` processes share them
            (:func:`shard_jobs`); the others' files are neither read nor written.
        world_size: The number of processes sharing the files (1: this process does them all).
        on_start: Called before each input file with its position (from 0) in this process's share, the
            number of files in it and the file.
        on_result: Called with each result as soon as it is known.
        on_tile: Called after each tile of each frame with the tiles done and the tiles in the frame
            (:func:`sisr.inference.upscale_tensor`); an exception it raises stops the work at that tile,
            leaving no output for the file being upscaled.

    Returns:
        One result per input file of this process's share, in order; failed files carry their error.

    Raises:
        SisrError: If anything checked before the first image fails (inputs, outputs, the model).
    """
    # Imported here so that listing the commands does not pay for importing torch.
    from sisr.checkpoint import load_model
    from sisr.inference import upscale_image
    from sisr.models import scale_of
    from sisr.onnx_model import is_onnx_path
    from sisr.shipped import choose_model

    names = [os.fspath(name) for name in inputs]
    sources = collect_sources(names)  # missing inputs fail before the model is loaded
    if output is None and (len(names) > 1 or Path(names[0]).is_dir()):
        raise SisrError("several inputs or a folder need -o OUTPUT_FOLDER")
    name = choose_model(model, scale, real=real)
    if is_onnx_path(name):  # an exported file: ONNX Runtime behind the same tiles and formats
        from sisr.onnx_model import load_onnx_model

        network = load_onnx_model(name, device=device)
        found = network.scale
    else:
        network = load_model(name, device=device)
        found = scale_of(network)
    if scale is not None and found != scale:
        raise SisrError(f"{name} upscales x{found}, not x{scale} (--scale)")
    check_model_precision(network, precision)
    if output is None:
        source = Path(names[0])
        output = source.with_name(f"{source.stem}_x{found}{source.suffix}")
    jobs = shard_jobs(plan_jobs(names, sources, os.fspath(output)), rank=rank, world_size=world_size)

    results = []
    for index, (source, target) in enumerate(jobs):
        if on_start is not None:
            on_start(index, len(jobs), source)
        error = None
        try:
            image = read_image(source, max_pixels=max_pixels, all_frames=True)
            # Before the network's long run: the format holds the channels and frames; the folder takes files.
            check_writable(target, channels=image.pixels.shape[2], frames=len(image.frames))
            try:
                upscaled = upscale_image(
                    network, image, tile=tile, overlap=overlap, precision=precision, on_tile=on_tile
                )
            except MemoryError:
                raise SisrError(f"{source}: out of memory; try a smaller --tile") from None
            except RuntimeError as e:  # allocation failures of torch
                if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
                    raise
                raise SisrError(f"{source}: out of memory; try a smaller --tile") from None
            _make_folder(target.parent)
            write_image(target, upscaled)
        except SisrError as e:
            error = e
        result = UpscaleResult(source=source, target=target, scale=found, model=name, error=error)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def collect_sources(inputs: Sequence[str]) -> list[Path]:
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


def plan_jobs(inputs: Sequence[str], sources: list[Path], output: str) -> list[tuple[Path, Path]]:
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


def shard_jobs(jobs: Sequence[tuple[Path, Path]], *, rank: int, world_size: int) -> list[tuple[Path, Path]]:
    """The jobs of process `rank` of `world_size`: every `world_size`-th one from position `rank`.

    Every job falls to exactly one process, and the shares differ in length by at most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} processes")
    return list(jobs[rank::world_size])


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SisrError(f"{folder}: cannot create folder: {e.strerror or e}") from None
