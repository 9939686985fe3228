"""Dataset preparation: bicubic LR images, sub-image tiling and LMDB packing (``sisr prepare``).

The usual DIV2K / DF2K pipeline of BasicSR, without OpenCV or MATLAB:

1. ``sisr prepare lr HR_DIR OUT_DIR --scales 2 3 4`` writes ``OUT_DIR/X{s}/{name}x{s}.png``: each HR
   image mod-cropped to a multiple of ``s`` and shrunk with MATLAB's bicubic ``imresize`` (antialiased),
   rounded as MATLAB's ``im2uint8`` does. The mod-cropped HR images are *not* written: the datasets and
   the evaluation mod-crop GT images themselves (:class:`~sisr.data.datasets.PairedImageDataset`
   accepts a GT up to ``scale - 1`` pixels larger than ``scale`` times its LR), so ``HR_DIR`` serves
   as GT as it is.
2. ``sisr prepare subimages IN_DIR OUT_DIR --crop-size 480 --step 240`` cuts every image into
   overlapping ``crop_size`` squares ``{name}_s{index:03d}.png`` (BasicSR's ``extract_subimages.py``;
   run it on the HR folder with 480/240 and on ``X{s}`` with ``480/s`` / ``240/s`` so the tiles match).
3. ``sisr prepare lmdb IN_DIR OUT.lmdb`` packs a folder into a BasicSR-compatible LMDB.

``sisr prepare degrade HR_DIR OUT_DIR --scale 4 --seed 0`` writes a fixed real-world validation set in
the layout of step 1: each HR image through Real-ESRGAN's degradations (:mod:`sisr.data.degradations`),
the same for the same seed.

Every output image is written atomically (a temporary file in the same folder, then ``os.replace``) and
an LMDB is built in a temporary folder renamed at the end, so an interrupted run leaves no partial file.
LR images keep the bit depth and the gray or colour layout of their HR image (alpha is dropped); the
sub-image and LMDB steps keep gray images gray and turn everything else into RGB. Problems with the
input raise :class:`~sisr.errors.SisrError` naming the file.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from sisr.data.images import encode_image, image_size, read_image, write_image
from sisr.errors import SisrError

if TYPE_CHECKING:
    from sisr.data.degradations import Degradation

__all__ = [
    "PrepareWarning",
    "Summary",
    "extract_subimages",
    "make_degraded",
    "make_lmdb",
    "make_lr",
    "run_jobs",
    "tile_positions",
]

_SCALE_SUFFIX = re.compile(r"x\d+$")

_T = TypeVar("_T")
_R = TypeVar("_R")


class PrepareWarning(UserWarning):
    """An input image was left out (e.g. smaller than the sub-image size)."""


@dataclass(frozen=True)
class Summary:
    """What a preparation step did.

    Attributes:
        images: Input images processed.
        written: Output images (or LMDB entries) written.
        skipped: Input images left out, each with the reason.
    """

    images: int
    written: int
    skipped: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _list_images(folder: str | os.PathLike[str], *, what: str) -> list[Path]:
    # sisr.data (and torch) is imported here, in the parent only: pool workers stay light.
    from sisr.data.datasets import list_images

    return list_images(folder, what=what)


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SisrError(f"cannot create folder {path}: {_one_line(e)}") from e


def run_jobs(fn: Callable[[_T], _R], jobs: Sequence[_T], workers: int) -> list[_R]:
    """``[fn(job) for job in jobs]``, in a pool of ``workers`` processes when ``workers > 1``.

    The pool of every step here, and of ``scripts/build_trainset.py``: ``fn`` must be importable by a
    fresh process (a module-level function), since the workers are spawned, not forked.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    # spawn: the parent may hold threads (torch), which fork would copy in an unusable state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        try:
            return list(pool.map(fn, jobs))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SisrError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------
# LR images
# ----------------------------------------------------------------------------------------------------


def _lr_job(job: tuple[Path, Path, tuple[int, ...]]) -> int:
    # Imported here: the sub-image and LMDB steps do not need torch (which sisr.imresize imports).
    from sisr.imresize import bicubic_lr

    path, out_dir, scales = job
    pixels = read_image(path).pixels
    if pixels.shape[2] in (2, 4):
        pixels = pixels[:, :, :-1]  # alpha dropped, as the datasets drop it; gray stays gray
    for s in scales:
        try:
            lr = bicubic_lr(pixels, s)  # mod-crop, MATLAB bicubic, rounded to the input's bit depth
        except SisrError as e:
            raise SisrError(f"{path}: {e}") from None
        write_image(out_dir / f"X{s}" / f"{path.stem}x{s}.png", lr)
    return len(scales)


def make_lr(
    hr_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    scales: Sequence[int],
    *,
    workers: int = 1,
) -> Summary:
    """Makes bicubic LR images in DIV2K / benchmark layout: ``out_dir/X{s}/{name}x{s}.png``.

    Each HR image is mod-cropped to a multiple of ``s`` (bottom rows and right columns dropped), shrunk
    with MATLAB's ``imresize(hr, 1/s, 'bicubic')`` in float64 and rounded to the input's bit depth like
    MATLAB's ``imwrite``. Existing outputs are replaced.

    Args:
        hr_dir: Folder of HR images (not scanned recursively).
        out_dir: Output folder; ``X{s}`` subfolders are created.
        scales: Downscaling factors, each an integer >= 2.
        workers: Processes to use; 1 works in this process.

    Returns:
        A :class:`Summary` (``written`` counts LR images over all scales).

    Raises:
        SisrError: On a missing or empty folder, an unreadable image, an image smaller than a scale,
            or an invalid option.
    """
    if not scales:
        raise SisrError("give at least one scale")
    checked = tuple(sorted({_check_int("scale", s, minimum=2) for s in scales}))
    workers = _check_int("workers", workers, minimum=1)
    files = _list_images(hr_dir, what="HR")
    out = Path(out_dir)
    for s in checked:
        _make_dir(out / f"X{s}")
    written = run_jobs(_lr_job, [(p, out, checked) for p in files], workers)
    return Summary(images=len(files), written=sum(written))


def _degrade_job(job: tuple[Path, Path, int, int, int, Degradation]) -> int:
    import torch

    from sisr.data.datasets import to_float_rgb
    from sisr.data.degradations import degrade

    path, target, scale, seed, index, settings = job
    pixels = read_image(path).pixels
    h, w = pixels.shape[0] - pixels.shape[0] % scale, pixels.shape[1] - pixels.shape[1] % scale
    if h == 0 or w == 0:
        raise SisrError(
            f"{path}: image of {pixels.shape[0]}x{pixels.shape[1]} pixels is smaller than scale {scale}"
        )
    hr = torch.from_numpy(np.ascontiguousarray(to_float_rgb(pixels[:h, :w]).transpose(2, 0, 1)))
    # One generator per image from (seed, its place in the sorted folder): the same set for the same
    # seed, whatever the number of workers.
    rng = np.random.default_rng([seed, index])
    lr = degrade(hr, scale=scale, settings=settings, rng=rng)
    write_image(target, (lr.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))
    return 1


def make_degraded(
    hr_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    scale: int,
    seed: int,
    settings: Degradation | None = None,
    workers: int = 1,
) -> Summary:
    """Makes a fixed degraded LR set: ``out_dir/X{scale}/{name}x{scale}.png``, as :func:`make_lr` lays out.

    Each HR image (mod-cropped to a multiple of `scale`, alpha dropped, gray made RGB) goes through
    :func:`sisr.data.degradations.degrade` with a generator seeded by ``(seed, index)``, its index in the
    sorted folder. The HR images serve as GT as they are (``gt_usm`` sharpens training GT only, so it is
    not applied here). Outputs are 8-bit RGB PNG, written atomically; existing ones are replaced.

    Args:
        hr_dir: Folder of HR images (not scanned recursively).
        out_dir: Output folder; an ``X{scale}`` subfolder is created.
        scale: Downscaling factor, an integer >= 2.
        seed: Seed of the whole set.
        settings: Degradation settings; None: Real-ESRGAN's x4plus recipe.
        workers: Processes to use; 1 works in this process.

    Returns:
        A :class:`Summary`.

    Raises:
        SisrError: On a missing or empty folder, an unreadable image, an image smaller than `scale`,
            or an invalid option.
    """
    from sisr.data.degradations import Degradation

    scale = _check_int("scale", scale, minimum=2)
    seed = _check_int("seed", seed, minimum=0)
    workers = _check_int("workers", workers, minimum=1)
    settings = Degradation() if settings is None else settings
    settings.check("degradation")
    files = _list_images(hr_dir, what="HR")
    folder = Path(out_dir) / f"X{scale}"
    _make_dir(folder)
    jobs = [(p, folder / f"{p.stem}x{scale}.png", scale, seed, i, settings) for i, p in enumerate(files)]
    written = run_jobs(_degrade_job, jobs, workers)
    return Summary(images=len(files), written=sum(written))


# ----------------------------------------------------------------------------------------------------
# Sub-images
# ----------------------------------------------------------------------------------------------------


def tile_positions(length: int, crop_size: int, step: int, thresh_size: int) -> list[int]:
    """Start offsets of the crops along one axis (BasicSR's ``extract_subimages`` rule).

    Crops start at ``0, step, 2 * step, ...`` while they fit; if more than ``thresh_size`` pixels are
    then left uncovered at the end, one more crop is flush with the end (``length - crop_size``).

    Returns:
        The offsets; empty when ``length < crop_size``.
    """
    if length < crop_size:
        return []
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def _subimage_job(job: tuple[Path, Path, int, int, int, bool, int]) -> tuple[int, str | None]:
    path, out_dir, crop_size, step, thresh_size, strip_scale_suffix, compress_level = job
    pixels = read_image(path).pixels  # (H, W, C)
    height, width = pixels.shape[:2]
    rows = tile_positions(height, crop_size, step, thresh_size)
    cols = tile_positions(width, crop_size, step, thresh_size)
    if not rows or not cols:
        return 0, f"{path}: {height}x{width} is smaller than the {crop_size}x{crop_size} sub-images"
    name = _SCALE_SUFFIX.sub("", path.stem) if strip_scale_suffix else path.stem
    index = 0
    for top in rows:  # row-major, numbered from 1, as BasicSR
        for left in cols:
            index += 1
            tile = pixels[top : top + crop_size, left : left + crop_size]
            write_image(out_dir / f"{name}_s{index:03d}.png", tile, compress_level=compress_level)
    return index, None


def extract_subimages(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    crop_size: int,
    step: int,
    thresh_size: int = 0,
    workers: int = 1,
    strip_scale_suffix: bool = True,
    compress_level: int = 3,
) -> Summary:
    """Cuts every image into overlapping squares ``out_dir/{name}_s{index:03d}.png`` (BasicSR's tool).

    Offsets along each axis follow :func:`tile_positions`; tiles are numbered from 1, row by row. A
    trailing scale suffix ``x2`` / ``x3`` / ... is removed from the name (``0001x2.png`` gives
    ``0001_s001.png``) so that HR and LR tiles share names; BasicSR removes them anywhere in the name.
    Pixels are copied exactly; outputs are PNG. Images smaller than ``crop_size`` are left out with a
    :class:`PrepareWarning` (BasicSR fails on them); existing outputs are replaced.

    Args:
        in_dir: Folder of images (not scanned recursively).
        out_dir: Output folder, created if needed.
        crop_size: Side of the squares.
        step: Distance between neighbouring squares.
        thresh_size: Add a last square flush with the edge only if more than this many pixels would
            otherwise be left out.
        workers: Processes to use; 1 works in this process.
        strip_scale_suffix: Remove a trailing ``x<digits>`` from the names.
        compress_level: PNG compression, 0 (fast, big) to 9.

    Returns:
        A :class:`Summary`.

    Raises:
        SisrError: On a missing or empty folder, an unreadable image or an invalid option.
    """
    crop_size = _check_int("crop_size", crop_size, minimum=1)
    step = _check_int("step", step, minimum=1)
    thresh_size = _check_int("thresh_size", thresh_size, minimum=0)
    workers = _check_int("workers", workers, minimum=1)
    compress_level = _check_int("compress_level", compress_level, minimum=0)
    if compress_level > 9:
        raise SisrError(f"compress_level must be in 0..9, got {compress_level}")
    files = _list_images(in_dir, what="input")
    out = Path(out_dir)
    _make_dir(out)
    jobs = [(p, out, crop_size, step, thresh_size, strip_scale_suffix, compress_level) for p in files]
    results = run_jobs(_subimage_job, jobs, workers)
    skipped = tuple(reason for _, reason in results if reason is not None)
    for reason in skipped:
        warnings.warn(f"left out {reason}", PrepareWarning, stacklevel=2)
    return Summary(images=len(files), written=sum(n for n, _ in results), skipped=skipped)


# ----------------------------------------------------------------------------------------------------
# LMDB
# ----------------------------------------------------------------------------------------------------


def make_lmdb(
    in_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    compress_level: int = 1,
    batch: int = 5000,
) -> Summary:
    """Packs a folder of images into a BasicSR-compatible LMDB.

    Layout: ``out_path/data.mdb`` (+ ``lock.mdb``) maps the key ``name`` (file name without extension)
    to the PNG-encoded image, and ``out_path/meta_info.txt`` has one line ``name.png (h,w,c) level`` per
    image, in sorted order (``c`` is 1 for gray, 3 for RGB, 4 for RGBA). Read it with
    ``io_backend="lmdb"`` in :mod:`sisr.data.datasets` or with BasicSR.

    Args:
        in_dir: Folder of images (not scanned recursively).
        out_path: The LMDB folder to create; its name must end with ``.lmdb`` and it must not exist.
        compress_level: PNG compression of the stored images, 0 to 9 (BasicSR uses 1).
        batch: Images per write transaction.

    Returns:
        A :class:`Summary`.

    Raises:
        SisrError: If ``lmdb`` is not installed, the output exists or is misnamed, two images share a
            name, an image is unreadable, or the input folder is missing or empty.
    """
    from sisr.data.datasets import _import_lmdb

    lmdb = _import_lmdb()
    compress_level = _check_int("compress_level", compress_level, minimum=0)
    if compress_level > 9:
        raise SisrError(f"compress_level must be in 0..9, got {compress_level}")
    batch = _check_int("batch", batch, minimum=1)
    out = Path(out_path)
    if out.suffix != ".lmdb":
        raise SisrError(f"the LMDB path must end with .lmdb, got {out}")
    if out.exists():
        raise SisrError(f"{out} already exists; remove it or choose another path")
    files = _list_images(in_dir, what="input")
    keys = [p.stem for p in files]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise SisrError(f"two images in {in_dir} are both named {duplicate} (keys drop the extension)")

    # Upper bound of the database size from the headers: a PNG is at most slightly larger than the raw
    # pixels, and LMDB adds at most about a page per value (and B-tree pages); the map is virtual memory.
    raw = 0
    for path in files:
        height, width = image_size(path)
        raw += width * height * 8 + 3 * 4096
    map_size = 2 * raw + (64 << 20)

    _make_dir(out.parent)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        env = lmdb.open(str(tmp), map_size=map_size)
        try:
            lines = []
            for start in range(0, len(files), batch):
                with env.begin(write=True) as txn:
                    for i in range(start, min(start + batch, len(files))):
                        path, key = files[i], keys[i]
                        pixels = read_image(path).pixels  # (H, W, C)
                        value = encode_image(pixels, "png", name=str(path), compress_level=compress_level)
                        txn.put(key.encode("utf-8"), value)
                        height, width, channels = pixels.shape
                        lines.append(f"{key}.png ({height},{width},{channels}) {compress_level}\n")
        finally:
            env.close()
        (tmp / "meta_info.txt").write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, lmdb.Error | OSError):
            raise SisrError(f"cannot write LMDB {out}: {_one_line(e)}") from e
        raise
    return Summary(images=len(files), written=len(files))
