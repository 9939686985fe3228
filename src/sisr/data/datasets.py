"""Training and validation data: paired LR/HR folders, and HR folders whose LR images are made on the fly.

Two datasets cover what MMA and SeemoRe train on (both through BasicSR):

- :class:`PairedImageDataset` reads ready-made LR ("LQ") and HR ("GT") images, e.g. DIV2K / DF2K with
  their bicubic LR folders, or the benchmark sets for validation. Pairs are found by name: the GT
  ``0001.png`` goes with the LQ ``0001x2.png`` for ``filename_tmpl="{}x2"``. Training takes a random
  aligned crop (``gt_size`` on GT, ``gt_size // scale`` on LQ) and BasicSR's flips/rotation.
- :class:`GTOnlyDataset` reads HR images only and makes the LR input itself, like MMA's ImageNet
  pretraining (``ImageNetPairedDataset`` in the official code): mod-crop, stretch images smaller than
  ``gt_size`` up to it (bilinear, as ``cv2.resize``), random crop, MATLAB bicubic ``1 / scale``.

Images are read by :mod:`sisr.data.images` (files and LMDB values alike, EXIF orientation applied) and
turned into the networks' float RGB by :func:`to_float_rgb` (gray replicated, alpha dropped, 8-bit
samples ``x / 255``, 16-bit ``x / 65535``). Samples are dicts of ``(3, h, w)`` float32 tensors in
``[0, 1]`` (LR made on the fly for training is not clipped, as in MMA) and the source names. The sizes
of every LQ/GT pair are checked from the file headers when a dataset is built, and every mismatch is
reported at once.

Unreadable files never stop a run: the first failure of a file emits an :class:`UnreadableImageWarning`
naming it, the file is remembered as bad, and another image is drawn in its place. ``dataset.skipped``
counts the bad files *seen by this process*: with ``num_workers > 0`` every DataLoader worker holds its
own copy of the dataset, so each worker warns (on its stderr) and counts on its own.

Samples are drawn by key: a plain index, or ``(index, sample_seed)`` from
:class:`~sisr.data.loaders.SeededSampler`, which makes every random draw of a sample (crop, flips, the
replacement of an unreadable file) a function of the key alone; see :mod:`sisr.data.loaders`.
"""

from __future__ import annotations

import contextlib
import operator
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from sisr.data.degradations import Degradation, degrade, usm_sharp
from sisr.data.images import IMAGE_EXTENSIONS, decode_image, image_size, read_image
from sisr.errors import SisrError
from sisr.imresize import bicubic_lr

__all__ = [
    "IMAGE_SUFFIXES",
    "GTOnlyDataset",
    "PairedImageDataset",
    "SampleKey",
    "UnreadableImageWarning",
    "augment",
    "format_problems",
    "list_images",
    "paired_random_crop",
    "read_meta_info",
    "resize_bilinear",
    "to_float_rgb",
]

# File name suffixes (lower case) taken as images when scanning folders: those the reader reads.
IMAGE_SUFFIXES = frozenset(IMAGE_EXTENSIONS)

# What a dataset accepts as an index: a plain int, or (index, sample_seed) from SeededSampler.
SampleKey = int | tuple[int, int]


class UnreadableImageWarning(UserWarning):
    """An image could not be read and was skipped; another one was used in its place."""


class _Unreadable(Exception):
    """Internal: reading ``name`` failed for ``reason``; the dataset skips it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def to_float_rgb(pixels: np.ndarray) -> np.ndarray:
    """The networks' input: ``(H, W, C)`` pixels as ``(H, W, 3)`` float32 RGB in ``[0, 1]``.

    The one conversion from what :mod:`sisr.data.images` reads: gray (C = 1, or gray + alpha) is
    replicated to RGB, alpha is dropped, uint8 becomes ``x / 255`` and uint16 ``x / 65535``. Float input
    (already converted, e.g. a stretched image) keeps its values.
    """
    if pixels.shape[2] <= 2:
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    elif pixels.shape[2] > 3:
        pixels = pixels[:, :, :3]
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535.0)
    return pixels.astype(np.float32, copy=False)


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) pixels -> (3, H, W) float32 tensor in [0, 1] (see :func:`to_float_rgb`)."""
    return torch.from_numpy(np.ascontiguousarray(to_float_rgb(pixels).transpose(2, 0, 1)))


def list_images(folder: str | os.PathLike[str], *, what: str, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted by relative path; hidden files are ignored.

    Args:
        folder: The folder to scan.
        what: How to call the folder in error messages, e.g. ``"GT"``.
        recursive: Also scan subfolders (ImageNet keeps one folder per class).

    Returns:
        The image paths, at least one.

    Raises:
        SisrError: If the folder does not exist or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise SisrError(f"{what} folder {root} does not exist or is not a folder")
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = [
        p
        for p in candidates
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        raise SisrError(f"no images in {what} folder {root}")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_meta_info(path: str | os.PathLike[str]) -> list[str]:
    """Image names from a BasicSR meta-info file: the first field of every non-empty line.

    Lines look like ``0001_s001.png (480,480,3)`` or, in an LMDB's ``meta_info.txt``,
    ``0001_s001.png (480,480,3) 1``.

    Raises:
        SisrError: If the file cannot be read or lists no name.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SisrError(f"cannot read meta-info file {path}: {_one_line(e)}") from e
    names = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not names:
        raise SisrError(f"meta-info file {path} lists no images")
    return names


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError as e:
        raise SisrError(
            "the lmdb backend needs the lmdb package: pip install lmdb (or pip install 'sisr[lmdb]')"
        ) from e
    return lmdb


class _LmdbStore:
    """Read-only access to a BasicSR-layout LMDB folder (``data.mdb`` + ``meta_info.txt``).

    Keys are the image names of ``meta_info.txt`` without extension; values are encoded images (PNG).
    Holds only the path, so it pickles; the environment is opened once per process (:func:`_lmdb_env`).
    """

    def __init__(self, root: str | os.PathLike[str], *, what: str) -> None:
        lmdb = _import_lmdb()
        self.root = Path(root)
        for needed in ("data.mdb", "meta_info.txt"):
            if not (self.root / needed).is_file():
                raise SisrError(f"{what} LMDB {self.root} has no {needed}; make it with 'sisr prepare lmdb'")
        self.keys = [os.path.splitext(name)[0] for name in read_meta_info(self.root / "meta_info.txt")]
        try:  # fail now rather than in a worker
            _lmdb_env(self.root)
        except lmdb.Error as e:
            raise SisrError(f"cannot open {what} LMDB {self.root}: {_one_line(e)}") from e

    def get(self, key: str, *, limit: int | None = None) -> bytes:
        """The value of ``key``, or its first ``limit`` bytes (enough for an image header)."""
        with _lmdb_env(self.root).begin(write=False, buffers=True) as txn:
            value = txn.get(key.encode("utf-8"))  # a view into the memory map: nothing is copied yet
            if value is None:
                raise _Unreadable(key, f"key not in {self.root}")
            return bytes(value if limit is None else value[:limit])

    def head(self, key: str) -> bytes:
        """The first bytes of the value of ``key``: its image header, without reading the whole image."""
        return self.get(key, limit=1 << 16)


# Read-only LMDB environments of this process, by folder: py-lmdb refuses to open an environment twice in
# one process, so datasets (and their copies) share one. A handle inherited through fork (DataLoader
# workers) must not be used; it is closed and the folder reopened in the new process.
_LMDB_ENVS: dict[str, tuple[int, Any]] = {}


def _lmdb_env(root: Path) -> Any:
    path = str(root.resolve())
    entry = _LMDB_ENVS.get(path)
    if entry is not None:
        pid, env = entry
        if pid == os.getpid():
            return env
        with contextlib.suppress(Exception):
            env.close()
    lmdb = _import_lmdb()
    env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
    _LMDB_ENVS[path] = (os.getpid(), env)
    return env


def _reason(e: SisrError, name: str) -> str:
    """The message of a reader's error without the leading ``name: `` (the warning names the file)."""
    return str(e).removeprefix(f"{name}: ")


def _read(store: _LmdbStore | None, name: str) -> np.ndarray:
    """Pixels of ``name`` (a file path, or an LMDB key), as :mod:`sisr.data.images` decodes them."""
    try:
        if store is None:
            return read_image(name).pixels
        return decode_image(store.get(name), name).pixels
    except SisrError as e:
        raise _Unreadable(name, _reason(e, name)) from None


def _size(store: _LmdbStore | None, name: str) -> tuple[int, int] | None:
    """``(height, width)`` of ``name`` from its header, or None when the header cannot be read (the file
    is then skipped when drawn, as every unreadable file)."""
    try:
        if store is None:
            return image_size(name)
        return image_size(store.head(name), name)
    except (SisrError, _Unreadable):
        return None


# ----------------------------------------------------------------------------------------------------
# Transforms on (H, W, C) arrays
# ----------------------------------------------------------------------------------------------------


def paired_random_crop(
    gt: np.ndarray, lq: np.ndarray, *, gt_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Crops aligned patches: ``gt_size // scale`` square on LQ and the ``gt_size`` square it covers on GT.

    The LQ corner is uniform over all positions, as in BasicSR; the GT corner is ``scale`` times it.

    Args:
        gt: ``(scale * h, scale * w, C)`` array.
        lq: ``(h, w, C)`` array with ``h, w >= gt_size // scale``.
        gt_size: GT patch side, a multiple of ``scale``.
        scale: Upscaling factor.
        rng: Draws the corner (two integers).

    Returns:
        ``(gt_patch, lq_patch)``, views into the inputs.
    """
    lq_size = gt_size // scale
    h, w = lq.shape[:2]
    top = int(rng.integers(0, h - lq_size + 1))
    left = int(rng.integers(0, w - lq_size + 1))
    lq_patch = lq[top : top + lq_size, left : left + lq_size]
    gt_patch = gt[top * scale : top * scale + gt_size, left * scale : left * scale + gt_size]
    return gt_patch, lq_patch


def augment(
    images: Sequence[np.ndarray], *, hflip: bool, rot: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """Applies one random flip/rotation, the same to every image (BasicSR's ``augment``).

    Three coin flips with p = 0.5, drawn in this order: horizontal flip (if ``hflip``), vertical flip
    and transpose (both if ``rot``); a transpose after the flips gives the 90/270 degree rotations.
    Together they reach all 8 symmetries of the square.

    Args:
        images: ``(H, W, C)`` arrays (e.g. a GT and an LQ patch).
        hflip: Allow the horizontal flip.
        rot: Allow the vertical flip and the transpose.
        rng: Draws the coins (one per allowed transform).

    Returns:
        The transformed images (views).
    """
    do_hflip = hflip and rng.random() < 0.5
    do_vflip = rot and rng.random() < 0.5
    do_transpose = rot and rng.random() < 0.5
    out = []
    for img in images:
        if do_hflip:
            img = img[:, ::-1]
        if do_vflip:
            img = img[::-1]
        if do_transpose:
            img = img.transpose(1, 0, 2)
        out.append(img)
    return out


def _bilinear_matrix(in_length: int, out_length: int) -> np.ndarray:
    """(out, in) matrix of OpenCV's INTER_LINEAR along one axis (half-pixel centres, edges clamped)."""
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    src = (np.arange(out_length, dtype=np.float64) + 0.5) * (in_length / out_length) - 0.5
    src = np.clip(src, 0.0, in_length - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_length - 1)
    frac = src - lo
    rows = np.arange(out_length)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes a float ``(H, W, C)`` image like ``cv2.resize(img, (width, height))`` (INTER_LINEAR).

    MMA stretches pretraining images that are smaller than the patch size this way. Agrees with OpenCV
    for enlarging (no antialiasing; OpenCV's INTER_LINEAR does not antialias when shrinking either).

    Returns:
        float32 ``(height, width, C)``.
    """
    m_h = _bilinear_matrix(img.shape[0], height)  # (height, H)
    m_w = _bilinear_matrix(img.shape[1], width)  # (width, W)
    out = np.tensordot(m_h, img.astype(np.float64), axes=(1, 0))  # (height, W, C)
    out = np.moveaxis(np.tensordot(m_w, out, axes=(1, 1)), 0, 1)  # (height, width, C)
    return np.ascontiguousarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SisrError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_backend(io_backend: str) -> None:
    if io_backend not in ("disk", "lmdb"):
        raise SisrError(f"io_backend must be 'disk' or 'lmdb', got {io_backend!r}")


def _resolve_key(key: SampleKey, length: int) -> tuple[int, np.random.Generator]:
    """(index in [0, length), generator for this sample's random draws)."""
    if isinstance(key, tuple):
        index, seed = key
        rng = np.random.default_rng(seed)
    else:
        index = key
        rng = np.random.default_rng(random.getrandbits(64))
    index = operator.index(index)
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} samples")
    return index % length, rng


class _SkippingDataset(Dataset):
    """Common part: enlarged length, per-sample generators and the skipping of unreadable files."""

    def __init__(self, *, num_items: int, enlarge_ratio: int, name: str | None) -> None:
        self._num_items = num_items
        self._enlarge_ratio = _check_int("enlarge_ratio", enlarge_ratio, minimum=1)
        self._bad: dict[int, str] = {}  # item -> name of the file that failed
        self.name = name

    def problems(self, *, decode: bool = False) -> list[str]:
        """What would stop this dataset (or make it skip an image), one message per image.

        Args:
            decode: Decode every image, which finds truncated and corrupt files; False reads the
                headers only (cheap) and leaves unreadable files to be skipped when drawn.

        Returns:
            One-line messages naming the files, in the dataset's order; empty when all is well.
        """
        found = (self._problem(item, decode=decode) for item in range(self._num_items))
        return [p for p in found if p is not None]

    def lq_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``index``'s LR input (whole images), from file headers only.

        Raises:
            SisrError: A header cannot be read.
        """
        raise NotImplementedError

    def _problem(self, item: int, *, decode: bool) -> str | None:
        raise NotImplementedError

    @property
    def skipped(self) -> int:
        """Number of unreadable files met so far by this process."""
        return len(self._bad)

    @property
    def skipped_files(self) -> list[str]:
        """Names of the unreadable files met so far by this process, in the order met."""
        return list(self._bad.values())

    def __len__(self) -> int:
        return self._num_items * self._enlarge_ratio

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        index, rng = _resolve_key(key, len(self))
        item = index % self._num_items
        while True:
            if item not in self._bad:
                try:
                    return self._sample(item, rng)
                except _Unreadable as e:
                    self._bad[item] = e.name
                    warnings.warn(
                        f"skipping image {e.name} ({e.reason}); "
                        f"{len(self._bad)} skipped so far in this process",
                        UnreadableImageWarning,
                        stacklevel=2,
                    )
            if len(self._bad) == self._num_items:
                raise SisrError(f"none of the {self._num_items} images of the dataset could be read")
            item = int(rng.integers(self._num_items))  # another image, from this sample's generator

    def _sample(self, item: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class _Pair:
    gt: str
    lq: str


class PairedImageDataset(_SkippingDataset):
    """LQ/GT image pairs from two folders or two LMDBs, for training (random crops) and validation.

    Pairing: each GT image ``<stem><ext>`` goes with the LQ image ``filename_tmpl.format(stem) + ext``
    (an LQ with the same name but another image extension is accepted when it is the only one). GT
    images come from scanning ``gt_root`` (not recursive) or from ``meta_info_file``; with the LMDB
    backend they are the keys of ``gt_root/meta_info.txt`` and the LQ key is
    ``filename_tmpl.format(gt_key)`` (BasicSR's LMDBs use equal keys, i.e. ``"{}"``).

    A GT image may be up to ``scale - 1`` pixels taller/wider than ``scale`` times its LQ image (the
    benchmark HR images are not always mod-cropped); the extra bottom rows and right columns are cropped.

    The sizes of every pair are checked from the file headers when the dataset is built, so a pair that
    does not match stops nothing hours into a run: all such pairs are reported at once.

    Samples: ``{"lq": (3, h, w), "gt": (3, scale * h, scale * w), "lq_path": str, "gt_path": str}``,
    float32 in ``[0, 1]``; paths are file paths on disk and keys for LMDB.
    """

    generates_lr: ClassVar[bool] = False

    def __init__(
        self,
        *,
        gt_root: str | os.PathLike[str],
        lq_root: str | os.PathLike[str],
        scale: int,
        filename_tmpl: str = "{}",
        meta_info_file: str | os.PathLike[str] | None = None,
        gt_size: int | None = None,
        use_hflip: bool = False,
        use_rot: bool = False,
        io_backend: Literal["disk", "lmdb"] = "disk",
        enlarge_ratio: int = 1,
        name: str | None = None,
    ) -> None:
        """Finds the pairs and checks their sizes from the headers (the pixels are read per sample).

        Args:
            gt_root: Folder (or ``.lmdb`` folder) of high-resolution images.
            lq_root: Folder (or ``.lmdb`` folder) of low-resolution images.
            scale: Upscaling factor.
            filename_tmpl: LQ name for a GT stem, e.g. ``"{}x2"`` for DIV2K's ``0001x2.png``.
            meta_info_file: BasicSR meta-info file listing the GT images (names relative to
                ``gt_root``) instead of scanning the folder; ignored by the LMDB backend.
            gt_size: Side of the random GT training patch (a multiple of ``scale``); None returns whole
                images (validation).
            use_hflip: Random horizontal flips.
            use_rot: Random vertical flips and transposes (rotations by multiples of 90 degrees).
            io_backend: ``"disk"`` for image files, ``"lmdb"`` for BasicSR LMDBs (needs ``lmdb``).
            enlarge_ratio: Repeat the image list this many times per epoch (BasicSR's
                ``dataset_enlarge_ratio``), so that an epoch is not just a few batches.
            name: The set's name in reports (e.g. ``"Set5"``).

        Raises:
            SisrError: On a missing or empty folder, a GT image without LQ partner (or the reverse),
                pairs whose sizes do not match the scale (or LQ images smaller than the patch), a bad
                template or an invalid option.
        """
        self.scale = _check_int("scale", scale, minimum=1)
        if gt_size is not None:
            gt_size = _check_int("gt_size", gt_size, minimum=self.scale)
            if gt_size % self.scale:
                raise SisrError(f"gt_size {gt_size} must be a multiple of scale {self.scale}")
        if filename_tmpl.count("{}") != 1:
            raise SisrError(f"filename_tmpl must contain '{{}}' once, got {filename_tmpl!r}")
        _check_backend(io_backend)
        self.gt_size = gt_size
        self.use_hflip = bool(use_hflip)
        self.use_rot = bool(use_rot)
        self._gt_store: _LmdbStore | None = None
        self._lq_store: _LmdbStore | None = None
        if io_backend == "lmdb":
            self._gt_store = _LmdbStore(gt_root, what="GT")
            self._lq_store = _LmdbStore(lq_root, what="LQ")
            self._pairs = self._pair_lmdb(filename_tmpl)
        else:
            self._pairs = self._pair_folders(Path(gt_root), Path(lq_root), filename_tmpl, meta_info_file)
        super().__init__(num_items=len(self._pairs), enlarge_ratio=enlarge_ratio, name=name)
        problems = self.problems()
        if problems:
            raise SisrError(format_problems(f"{len(problems)} of {len(self._pairs)} GT/LQ pairs", problems))

    def lq_size(self, index: int) -> tuple[int, int]:
        pair = self._pairs[index % self._num_items]
        size = _size(self._lq_store, pair.lq)
        if size is None:
            raise SisrError(f"{pair.lq}: cannot read the image header")
        return size

    def _problem(self, item: int, *, decode: bool) -> str | None:
        pair = self._pairs[item]
        if decode:
            try:
                gt, lq = _read(self._gt_store, pair.gt).shape[:2], _read(self._lq_store, pair.lq).shape[:2]
            except _Unreadable as e:
                return str(e)
        else:
            gt, lq = _size(self._gt_store, pair.gt), _size(self._lq_store, pair.lq)
            if gt is None or lq is None:
                return None  # skipped when drawn, as every unreadable file
        return self._mismatch(pair, gt, lq)

    def _mismatch(self, pair: _Pair, gt: tuple[int, ...], lq: tuple[int, ...]) -> str | None:
        """Why the GT / LQ sizes ``(height, width)`` do not fit the scale (and the patch), or None."""
        s = self.scale
        (gt_h, gt_w), (lq_h, lq_w) = gt, lq
        if gt_h // s != lq_h or gt_w // s != lq_w:
            return (
                f"GT {pair.gt} is {gt_h}x{gt_w} but LQ {pair.lq} is {lq_h}x{lq_w}: at scale {s} the GT "
                f"must be {lq_h * s}x{lq_w * s} (up to {s - 1} more rows/columns)"
            )
        if self.gt_size is not None and min(lq_h, lq_w) < self.gt_size // s:
            lq_size = self.gt_size // s
            return (
                f"LQ {pair.lq} is {lq_h}x{lq_w}, smaller than the {lq_size}x{lq_size} LQ patch "
                f"(gt_size {self.gt_size} / scale {s}); remove it or lower gt_size"
            )
        return None

    def _pair_lmdb(self, tmpl: str) -> list[_Pair]:
        assert self._gt_store is not None and self._lq_store is not None
        lq_keys = set(self._lq_store.keys)
        pairs = []
        for gt_key in sorted(self._gt_store.keys):
            lq_key = tmpl.format(gt_key)
            if lq_key not in lq_keys:
                raise SisrError(
                    f"GT image {gt_key} in {self._gt_store.root} has no LQ partner: "
                    f"expected key {lq_key} in {self._lq_store.root}"
                )
            pairs.append(_Pair(gt=gt_key, lq=lq_key))
        _check_no_orphans(lq_keys - {p.lq for p in pairs}, self._lq_store.root)
        return pairs

    @staticmethod
    def _pair_folders(
        gt_root: Path, lq_root: Path, tmpl: str, meta_info_file: str | os.PathLike[str] | None
    ) -> list[_Pair]:
        lq_files = list_images(lq_root, what="LQ")
        lq_by_name = {p.name: p for p in lq_files}
        lq_by_stem: dict[str, list[Path]] = {}
        for p in lq_files:
            lq_by_stem.setdefault(p.stem, []).append(p)
        if meta_info_file is None:
            gt_files = list_images(gt_root, what="GT")
        else:
            if not gt_root.is_dir():
                raise SisrError(f"GT folder {gt_root} does not exist or is not a folder")
            gt_files = [gt_root / name for name in read_meta_info(meta_info_file)]
            for p in gt_files:
                if not p.is_file():
                    raise SisrError(f"GT image {p} listed in {meta_info_file} does not exist")
        pairs = []
        for gt in gt_files:
            lq_name = tmpl.format(gt.stem) + gt.suffix
            if lq_name in lq_by_name:
                lq = lq_by_name[lq_name]
            elif len(lq_by_stem.get(tmpl.format(gt.stem), [])) == 1:
                lq = lq_by_stem[tmpl.format(gt.stem)][0]
            else:
                raise SisrError(f"GT image {gt} has no LQ partner: expected {lq_root / lq_name}")
            pairs.append(_Pair(gt=str(gt), lq=str(lq)))
        if meta_info_file is None:
            _check_no_orphans({str(p) for p in lq_files} - {p.lq for p in pairs}, lq_root)
        return pairs

    def _sample(self, item: int, rng: np.random.Generator) -> dict[str, Any]:
        pair = self._pairs[item]
        gt = _read(self._gt_store, pair.gt)
        lq = _read(self._lq_store, pair.lq)
        s = self.scale
        problem = self._mismatch(pair, gt.shape[:2], lq.shape[:2])  # checked at build: a file changed
        if problem is not None:
            raise SisrError(problem)
        gt = gt[: lq.shape[0] * s, : lq.shape[1] * s]
        if self.gt_size is not None:
            gt, lq = paired_random_crop(gt, lq, gt_size=self.gt_size, scale=s, rng=rng)
        gt, lq = augment([gt, lq], hflip=self.use_hflip, rot=self.use_rot, rng=rng)
        return {"lq": _to_tensor(lq), "gt": _to_tensor(gt), "lq_path": pair.lq, "gt_path": pair.gt}


def format_problems(head: str, problems: Sequence[str], *, limit: int = 10) -> str:
    """One line: ``head``, then the first ``limit`` problems and how many more there are."""
    shown = "; ".join(problems[:limit])
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{head}: {shown}{more}"


def _check_no_orphans(orphans: set[str], lq_root: Path) -> None:
    if orphans:
        example = sorted(orphans)[0]
        raise SisrError(
            f"{len(orphans)} LQ image(s) in {lq_root} have no GT partner, e.g. {example}; "
            "check filename_tmpl and the two folders"
        )


class GTOnlyDataset(_SkippingDataset):
    """HR images only; the LR input is made on the fly (:func:`~sisr.imresize.bicubic_lr`, MATLAB bicubic).

    For training (``gt_size`` set), per sample, following MMA's ``ImageNetPairedDataset``:

    1. mod-crop the HR image to a multiple of ``scale`` (bottom rows / right columns);
    2. if it is smaller than ``gt_size`` along an axis, stretch that axis to ``gt_size`` with bilinear
       interpolation (``cv2.resize``'s default; the aspect ratio is not kept, as in MMA);
    3. take a random ``gt_size`` crop whose corner lies on the ``scale`` grid;
    4. LR = MATLAB ``imresize(crop, 1 / scale)`` (antialiased bicubic), not quantised, not clipped;
    5. the same random flips/rotation on both (:func:`augment`).

    With ``degradation`` set, steps 4-5 become: flips/rotation on the GT patch, USM sharpening if
    ``gt_usm``, and the LR from Real-ESRGAN's two-stage degradations (:mod:`sisr.data.degradations`),
    all drawn from the sample's generator.

    MMA resizes the whole image and then crops GT and LR together; here only the crop is resized, which
    is much cheaper on large photos. The LR patch is then exactly the bicubic degradation of the GT patch
    (BasicSR-style: degrade the crop). It equals MMA's crop of the whole LR image except for the
    outermost 2 LR pixels on each side, where MATLAB's kernel would reach outside the crop and mirrors
    the crop's edge instead of reading the neighbouring pixels; the distribution of the crop positions
    is the same.

    For evaluation (``gt_size=None``) a sample is the whole mod-cropped image, and its LR is what the
    published benchmark LR files hold: MATLAB bicubic rounded to the image's bit depth like ``im2uint8``.

    Samples: ``{"lq": (3, h, w), "gt": (3, scale * h, scale * w), "lq_path": str, "gt_path": str}``
    (``h = w = gt_size / scale`` in training), float32.
    """

    generates_lr: ClassVar[bool] = True

    def __init__(
        self,
        *,
        gt_root: str | os.PathLike[str],
        scale: int,
        gt_size: int | None,
        use_hflip: bool = False,
        use_rot: bool = False,
        meta_info_file: str | os.PathLike[str] | None = None,
        io_backend: Literal["disk", "lmdb"] = "disk",
        enlarge_ratio: int = 1,
        recursive: bool = True,
        degradation: Degradation | None = None,
        name: str | None = None,
    ) -> None:
        """Lists the HR images.

        Args:
            gt_root: Folder of HR images, or an ``.lmdb`` folder.
            scale: Upscaling factor.
            gt_size: Side of the GT patch, a multiple of ``scale``; None returns whole images
                (evaluation).
            use_hflip: Random horizontal flips.
            use_rot: Random vertical flips and transposes.
            meta_info_file: BasicSR meta-info file listing the images (relative to ``gt_root``) instead
                of scanning; ignored by the LMDB backend.
            io_backend: ``"disk"`` or ``"lmdb"``.
            enlarge_ratio: Repeat the image list this many times per epoch.
            recursive: Scan the subfolders of ``gt_root`` too (ImageNet's class folders).
            degradation: Training only: make the LR with Real-ESRGAN's degradations
                (:func:`sisr.data.degradations.degrade`) instead of bicubic, the GT sharpened first if
                its ``gt_usm`` is set.
            name: The set's name in reports.

        Raises:
            SisrError: On a missing or empty folder or an invalid option.
        """
        self.scale = _check_int("scale", scale, minimum=1)
        self.gt_size = None if gt_size is None else _check_int("gt_size", gt_size, minimum=self.scale)
        if self.gt_size is not None and self.gt_size % self.scale:
            raise SisrError(f"gt_size {self.gt_size} must be a multiple of scale {self.scale}")
        _check_backend(io_backend)
        if degradation is not None:
            if self.gt_size is None:
                raise SisrError("degradation is for training patches (gt_size); evaluate on a fixed set")
            degradation.check("degradation")
        self.degradation = degradation
        self.use_hflip = bool(use_hflip)
        self.use_rot = bool(use_rot)
        self._store: _LmdbStore | None = None
        if io_backend == "lmdb":
            self._store = _LmdbStore(gt_root, what="GT")
            self._names = sorted(self._store.keys)
        elif meta_info_file is not None:
            root = Path(gt_root)
            if not root.is_dir():
                raise SisrError(f"GT folder {root} does not exist or is not a folder")
            self._names = [str(root / name) for name in read_meta_info(meta_info_file)]
        else:
            self._names = [str(p) for p in list_images(gt_root, what="GT", recursive=recursive)]
        super().__init__(num_items=len(self._names), enlarge_ratio=enlarge_ratio, name=name)

    def lq_size(self, index: int) -> tuple[int, int]:
        name = self._names[index % self._num_items]
        size = _size(self._store, name)
        if size is None:
            raise SisrError(f"{name}: cannot read the image header")
        return size[0] // self.scale, size[1] // self.scale

    def _problem(self, item: int, *, decode: bool) -> str | None:
        name = self._names[item]
        try:
            size = _read(self._store, name).shape[:2] if decode else _size(self._store, name)
        except _Unreadable as e:
            return str(e)
        return None if size is None else self._too_small(name, size)

    def _too_small(self, name: str, size: tuple[int, ...]) -> str | None:
        if min(size[:2]) < self.scale:
            return f"{name}: image of {size[0]}x{size[1]} pixels is smaller than scale {self.scale}"
        return None

    def _sample(self, item: int, rng: np.random.Generator) -> dict[str, Any]:
        name = self._names[item]
        gt = _read(self._store, name)
        problem = self._too_small(name, gt.shape)
        if problem is not None:
            raise _Unreadable(name, problem.removeprefix(f"{name}: "))
        s, size = self.scale, self.gt_size
        gt = gt[: gt.shape[0] - gt.shape[0] % s, : gt.shape[1] - gt.shape[1] % s]  # mod-crop
        if size is None:  # the whole image, with the LR of the benchmark files
            lq = bicubic_lr(gt, s)
            return {
                "lq": _to_tensor(lq),
                "gt": _to_tensor(gt),
                "lq_path": f"{name} (bicubic x{s})",
                "gt_path": name,
            }
        height, width = gt.shape[:2]
        if height < size or width < size:
            height, width = max(height, size), max(width, size)
            gt = resize_bilinear(to_float_rgb(gt), height, width)
        # Corner on the scale grid, uniform: MMA's paired crop picks the LR corner uniformly.
        top = s * int(rng.integers(0, (height - size) // s + 1))
        left = s * int(rng.integers(0, (width - size) // s + 1))
        gt_patch = to_float_rgb(gt[top : top + size, left : left + size])
        if self.degradation is not None:
            (gt_patch,) = augment([gt_patch], hflip=self.use_hflip, rot=self.use_rot, rng=rng)
            gt_tensor = _to_tensor(gt_patch)
            if self.degradation.gt_usm:  # Real-ESRNet: the loss and the degradations see the sharpened GT
                gt_tensor = usm_sharp(gt_tensor[None])[0]
            lq_tensor = degrade(gt_tensor, scale=s, settings=self.degradation, rng=rng)
            return {"lq": lq_tensor, "gt": gt_tensor, "gt_path": name}
        lq_patch = bicubic_lr(gt_patch, s)  # (size / s, size / s, 3), float: not rounded, not clipped
        gt_patch, lq_patch = augment([gt_patch, lq_patch], hflip=self.use_hflip, rot=self.use_rot, rng=rng)
        return {"lq": _to_tensor(lq_patch), "gt": _to_tensor(gt_patch), "gt_path": name}
