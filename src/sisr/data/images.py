"""Reading and writing images as numpy arrays, with the checks a command-line tool needs.

Pixels are always ``(H, W, C)`` arrays, C being 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), of dtype
``uint8`` or ``uint16``. Reading applies the EXIF orientation, decodes the whole file (so truncated files
fail here rather than later) and refuses images above a pixel budget before decoding them. Every problem
with a file becomes a one-line :class:`~sisr.errors.SisrError` that names the file; Pillow's warnings
about a file it could still decode (corrupt EXIF, say) become one ``sisr: warning: FILE: ...`` line on
stderr.

Animated (GIF, WebP, APNG) and multi-page (TIFF) files are refused unless the caller asks for every
frame (``all_frames=True``), which ``sisr upscale`` does: each frame comes back whole (Pillow composes
partial frames onto the ones before), all in one colour layout, with their durations and loop count, and
:func:`write_image` writes them all again, in order.

An ICC profile (when it describes the decoded pixels' colour space) and the EXIF block come along with
the pixels, the EXIF orientation reset to 1 once it has been applied, so that :func:`write_image` can
store them again.

Pillow keeps 16-bit gray images but reduces 16-bit colour PNGs to 8 bits, so those are decoded here:
Pillow's own PNG decoder (``zip``) unfilters the image data twice, once keeping the high and once the low
byte of every sample. Writing 16-bit colour PNGs, which Pillow cannot do, uses a small encoder below.
16-bit colour TIFFs are read by Pillow at 8 bits.

Formats follow the file extension when writing:

======================  =========================================================================
``.png``                8 or 16 bits, gray, gray + alpha, RGB or RGBA; ICC profile and EXIF.
``.jpg``, ``.jpeg``     8 bits, quality 95 without chroma subsampling; no alpha; ICC and EXIF.
``.webp``               lossless (super-resolved detail is not thrown away again); gray becomes RGB,
                        gray + alpha RGBA; ICC and EXIF.
``.bmp``                8 bits; no alpha; no ICC profile or EXIF.
``.tif``, ``.tiff``     LZW-compressed; 8 bits, or 16 bits for gray; ICC profile; pages.
``.gif``                at most 256 colours per frame (Pillow's quantiser), and only fully transparent
                        or opaque pixels; gray + alpha becomes RGBA; frames.
======================  =========================================================================

Animations are written as APNG (``.png``), animated WebP or GIF, with their durations and loop count, or
as TIFF pages; JPEG and BMP hold one frame. Frames are always 8 bits, except 16-bit gray TIFF pages.

16-bit pixels written to a format (or, for colour, to TIFF) that holds only 8 bits are rounded to 8.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image as PILImage
from PIL import TiffImagePlugin, UnidentifiedImageError

from sisr.atomic import atomic_write, new_temporary
from sisr.errors import SisrError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "Image",
    "check_writable",
    "decode_image",
    "encode_image",
    "format_for_path",
    "image_size",
    "read_image",
    "write_image",
]

# 100 megapixels: 300 MB as 8-bit RGB and 1.2 GB as float32, already far beyond what super-resolution is
# run on. It is below Pillow's own hard limit (2 * Image.MAX_IMAGE_PIXELS, about 179 megapixels), which
# still applies when a caller raises max_pixels above it.
DEFAULT_MAX_PIXELS = 100_000_000

# Extension (lower case) -> Pillow format name used for writing; reading sniffs the content instead.
IMAGE_EXTENSIONS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
}

# Decoders that may run on user files (the JPEG one also opens phone cameras' MPO files). Limiting the
# list also keeps Pillow away from formats that start external programs (EPS runs Ghostscript).
_READ_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
_SUPPORTED = "a PNG, JPEG, WebP, BMP, TIFF or GIF image"

# Formats whose extra frames are frames of an animation or pages, and so the formats that write them.
# An MPO's second image is a phone's preview or depth map, not a frame: its first image is read alone.
_MULTI_FRAME_FORMATS = {"PNG": "frames", "WEBP": "frames", "GIF": "frames", "TIFF": "pages"}

# Exceptions Pillow, zlib and struct raise on corrupt data (Pillow's TIFF reader raises TypeError and
# KeyError for a directory that lacks a required tag, found when it seeks to count the pages).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_HEADER = b"Exif\x00\x00"
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image.

    Attributes:
        pixels: ``(H, W, C)`` array, C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), dtype uint8 or
            uint16, upright (EXIF orientation applied).
        format: Pillow's name of the file format, e.g. ``"PNG"``, ``"JPEG"``, ``"WEBP"``.
        icc_profile: The embedded ICC colour profile, or None. Kept only when it describes gray (C <= 2)
            or RGB (C >= 3) pixels; a CMYK file's profile does not survive its conversion to RGB.
        exif: The EXIF block as a JPEG stores it (``b"Exif\\0\\0"`` and a TIFF header), with its
            orientation set to 1 when the orientation was applied to `pixels`; or None.
        later_frames: The frames after the first (`pixels`) of an animation or the pages after the
            first, each of the shape and dtype of `pixels`; empty for a single image.
        durations: How long each frame shows, in whole milliseconds, when the file says; else None.
        loop: How often an animation repeats (0: forever), when the file says; else None.
    """

    pixels: np.ndarray
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    later_frames: tuple[np.ndarray, ...] = field(default=())
    durations: tuple[int, ...] | None = None
    loop: int | None = None

    @property
    def frames(self) -> tuple[np.ndarray, ...]:
        """Every frame (or page) in order, `pixels` first."""
        return (self.pixels, *self.later_frames)

    @property
    def mode(self) -> Literal["gray", "LA", "RGB", "RGBA"]:
        """Colour layout: ``"gray"``, ``"LA"`` (gray + alpha), ``"RGB"`` or ``"RGBA"``."""
        return {1: "gray", 2: "LA", 3: "RGB", 4: "RGBA"}[self.pixels.shape[2]]

    @property
    def bit_depth(self) -> Literal[8, 16]:
        """Bits per sample: 8 for uint8 pixels, 16 for uint16 pixels."""
        return 16 if self.pixels.dtype == np.uint16 else 8


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS, all_frames: bool = False
) -> Image:
    """Reads and fully decodes a PNG, JPEG, WebP, BMP, TIFF or GIF file.

    Palette images become RGB, or RGBA when they have transparency; gray with alpha (or with a
    transparent gray value) stays gray + alpha; 1-bit images become 8-bit gray; CMYK and YCbCr become
    RGB. 16-bit gray PNG/TIFF and 16-bit colour and gray + alpha PNG are returned as uint16.

    Args:
        path: The image file.
        max_pixels: Largest accepted width * height (of all frames together), checked from the header
            before decoding.
        all_frames: Whether to read every frame of an animation or every page (see :class:`Image`);
            otherwise a file of several frames or pages is refused, never cut to its first one.

    Returns:
        The upright image.

    Raises:
        SisrError: The file is missing, empty, not an image, truncated or corrupt, has several frames or
            pages (unless `all_frames`) or pages of different sizes, has an unsupported pixel type, or
            exceeds `max_pixels`.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise SisrError(f"{name}: no such file")
    if os.path.isdir(name):
        raise SisrError(f"{name}: is a directory, not an image file")
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SisrError(f"{name}: cannot read: {_one_line(e)}") from None
    return decode_image(data, name, max_pixels=max_pixels, all_frames=all_frames)


def decode_image(
    data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, all_frames: bool = False
) -> Image:
    """Decodes an encoded image held in memory (an LMDB value, say) exactly as :func:`read_image` does.

    Args:
        data: The bytes of a PNG, JPEG, WebP, BMP, TIFF or GIF file.
        name: What to call the image in error messages.
        max_pixels: Largest accepted width * height (of all frames together), checked from the header
            before decoding.
        all_frames: As for :func:`read_image`.

    Returns:
        The upright image.

    Raises:
        SisrError: As :func:`read_image`.
    """
    if not data:
        raise SisrError(f"{name}: file is empty")
    try:
        # Pillow's warnings are collected and reported in one line once the image is decoded. It warns
        # (and above twice its limit raises) about large images too; our own check replaces that.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=_READ_FORMATS) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise SisrError(
                        f"{name}: image is {width}x{height} = {width * height} pixels, more than the "
                        f"limit of {max_pixels} (a decompression bomb?)"
                    )
                file_format = im.format or "unknown"
                count = getattr(im, "n_frames", 1) if file_format in _MULTI_FRAME_FORMATS else 1
                if count > 1 and not all_frames:
                    raise SisrError(
                        f"{name}: has {count} {_MULTI_FRAME_FORMATS[file_format]}; a single image is "
                        "needed here (split it into one file per frame)"
                    )
                if count * width * height > max_pixels:
                    raise SisrError(
                        f"{name}: {count} frames of {width}x{height} = {count * width * height} pixels, "
                        f"more than the limit of {max_pixels}"
                    )
                loop = im.info.get("loop")
                first = _decode(im, data, name, whole_file=count == 1)
                # The first frame's (the file's) metadata, before seeking to later frames changes it.
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
                exif = _exif_block(im.info.get("exif"), orientation)
                icc_profile = im.info.get("icc_profile") or None
                frames, durations = _decode_frames(im, data, name, first, count)
    except SisrError:
        raise
    except PILImage.DecompressionBombError as e:  # only when max_pixels is above Pillow's own limit
        raise SisrError(f"{name}: image is too large: {_one_line(e)}") from None
    except UnidentifiedImageError:
        raise SisrError(f"{name}: {_unidentified(data)}") from None
    except _DECODE_ERRORS as e:
        raise SisrError(f"{name}: cannot decode image: {_one_line(e)}") from None
    _report_warnings(name, caught)
    if icc_profile is not None and not _icc_fits(icc_profile, frames[0].shape[2]):
        icc_profile = None
    upright = [np.ascontiguousarray(_orient(pixels, orientation)) for pixels in frames]
    return Image(
        pixels=upright[0],
        format=file_format,
        icc_profile=icc_profile,
        exif=exif,
        later_frames=tuple(upright[1:]),
        durations=durations,
        loop=loop if count > 1 and isinstance(loop, int) else None,
    )


def image_size(source: str | os.PathLike[str] | bytes, name: str | None = None) -> tuple[int, int]:
    """``(height, width)`` of an image file or encoded bytes, upright, from the header alone.

    Cheap (the pixels are not decoded, so a truncated file is not noticed); the EXIF orientation is
    applied as :func:`read_image` applies it. A prefix of the file's bytes is enough for most files.

    Raises:
        SisrError: Not an image that :func:`read_image` opens, or no readable header.
    """
    label = name if name is not None else ("image" if isinstance(source, bytes) else os.fspath(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opened = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
            with PILImage.open(opened, formats=_READ_FORMATS) as im:
                width, height = im.size
                if im.format == "PNG":  # Pillow's getexif() would decode a PNG to look behind its pixels
                    exif = PILImage.Exif()
                    if "exif" in im.info:
                        exif.load(im.info["exif"])  # an eXIf chunk before the pixels, where it belongs
                else:
                    exif = im.getexif()
                orientation = exif.get(_EXIF_ORIENTATION, 1)
    except (PILImage.DecompressionBombError, *_DECODE_ERRORS) as e:
        raise SisrError(f"{label}: cannot read the image header: {_one_line(e)}") from None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def format_for_path(path: str | os.PathLike[str], format: str | None = None) -> str:
    """Returns the Pillow format name that :func:`write_image` uses for `path`.

    Args:
        path: Output file; its extension decides the format unless `format` is given.
        format: Explicit format (``"png"``, ``"jpeg"``, ``"jpg"``, ``"webp"``, ``"bmp"``, ``"tiff"``, ...).

    Raises:
        SisrError: The extension or format is not one of the supported ones.
    """
    name = os.fspath(path)
    if format is not None:
        key = "." + format.lower().lstrip(".")
        if key not in IMAGE_EXTENSIONS:
            raise SisrError(f"{name}: unknown image format {format!r}")
        return IMAGE_EXTENSIONS[key]
    ext = os.path.splitext(name)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        known = ", ".join(IMAGE_EXTENSIONS)
        shown = f"extension {ext!r}" if ext else "no extension"
        raise SisrError(f"{name}: cannot choose an image format for {shown} (use one of {known})")
    return IMAGE_EXTENSIONS[ext]


def check_writable(
    path: str | os.PathLike[str], *, channels: int, frames: int = 1, format: str | None = None
) -> str:
    """Checks, before any work is done, that :func:`write_image` can write `channels` channels to `path`.

    The format must be known and hold the pixels (no alpha, and one frame, in JPEG or BMP), and `path`
    must not be a folder. Its folder must exist and take a new file, or be creatable under the nearest
    folder that exists: a temporary file (named as :func:`sisr.atomic.atomic_write` names its own) is
    created there and removed again, which also catches read-only file systems and permissions that
    ``os.access`` misjudges (everything looks writable to root). Nothing is left behind.

    Args:
        path: The output file.
        channels: Channels of the pixels to be written: 1, 2, 3 or 4.
        frames: How many frames or pages will be written.
        format: Overrides the format chosen from the extension (see :func:`format_for_path`).

    Returns:
        The Pillow format name that will be written.

    Raises:
        SisrError: One line saying why the file cannot be written.
    """
    name = os.fspath(path)
    file_format = format_for_path(name, format)
    _check_channels(name, file_format, channels, frames)
    if os.path.isdir(name):
        raise SisrError(f"{name}: cannot write: is a directory")
    folder = os.path.dirname(os.path.abspath(name))
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise SisrError(f"{name}: cannot write: {existing} is not a folder")
    try:
        os.unlink(new_temporary(name, folder=existing))
    except OSError as e:
        where = "into" if existing == folder else "a folder under"
        raise SisrError(f"{name}: cannot write {where} {existing}: {_one_line(e)}") from None
    return file_format


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray | Image,
    *,
    format: str | None = None,
    compress_level: int | None = None,
) -> None:
    """Writes an image atomically: a partly written file never appears under `path`.

    The data goes to a hidden temporary file next to `path` that is renamed over `path` once complete,
    and removed if anything fails (including KeyboardInterrupt).

    Args:
        path: Output file. Its directory must exist.
        image: Pixels, an ``(H, W)`` or ``(H, W, C)`` array with C in (1, 2, 3, 4), dtype uint8 or uint16;
            or an :class:`Image`, whose frames, durations, loop count, ICC profile and EXIF are written
            too where the format holds them (see the module's table). An ICC profile is left out where
            it does not describe the written pixels (a gray profile in a WebP, which stores gray as RGB).
        format: Overrides the format chosen from the extension (see :func:`format_for_path`).
        compress_level: PNG's zlib level, 0 (fastest) to 9 (smallest); None: 6. Other formats ignore it.

    Raises:
        SisrError: Unknown format, alpha or several frames for a format without them, or the file cannot
            be written.
        TypeError: The pixels have an unsupported dtype.
        ValueError: The pixels have an unsupported shape, frames differ in shape or dtype, or the
            durations are not one per frame.
    """
    name = os.fspath(path)
    encode = _encoder(name, image, format_for_path(name, format), compress_level)

    def write(tmp: str) -> None:
        with open(tmp, "w+b") as f:  # Pillow reads back what it wrote of TIFF pages
            encode(f)

    try:
        atomic_write(name, write)
    except OSError as e:
        raise SisrError(f"{name}: cannot write: {_one_line(e)}") from None


def encode_image(
    image: np.ndarray | Image, format: str, *, name: str = "image", compress_level: int | None = None
) -> bytes:
    """Encodes an image in memory (an LMDB value, say) exactly as :func:`write_image` writes a file.

    Args:
        image: As for :func:`write_image`.
        format: ``"png"``, ``"jpeg"``, ``"webp"``, ``"bmp"``, ``"tiff"`` or ``"gif"``.
        name: What to call the image in error messages.
        compress_level: As for :func:`write_image`.

    Returns:
        The bytes of the encoded file.

    Raises:
        SisrError, TypeError, ValueError: As :func:`write_image`.
    """
    buffer = io.BytesIO()
    _encoder(name, image, format_for_path(name, format), compress_level)(buffer)
    return buffer.getvalue()


def _encoder(
    name: str, image: np.ndarray | Image, file_format: str, compress_level: int | None
) -> Callable[[BinaryIO], None]:
    """Checks what :func:`write_image` is given and returns the function that encodes it into a file."""
    if compress_level is not None and not 0 <= compress_level <= 9:
        raise SisrError(f"{name}: PNG compress level {compress_level} is not between 0 and 9")
    if not isinstance(image, Image):
        image = Image(pixels=np.asarray(image), format=file_format)
    frames = [_as_hwc(pixels) for pixels in image.frames]
    if any(f.shape != frames[0].shape or f.dtype != frames[0].dtype for f in frames):
        raise ValueError("all frames must have the shape and dtype of the first")
    if image.durations is not None and len(image.durations) != len(frames):
        raise ValueError(f"{len(image.durations)} durations for {len(frames)} frames")
    channels = frames[0].shape[2]
    _check_channels(name, file_format, channels, len(frames))
    keeps_16 = (file_format == "PNG" and len(frames) == 1) or (file_format == "TIFF" and channels == 1)
    if frames[0].dtype == np.uint16 and not keeps_16:
        frames = [_to_8bit(pixels) for pixels in frames]
    stored_channels = channels if file_format not in ("WEBP", "GIF") else max(channels, 3)  # no gray
    exif = image.exif
    metadata = _Metadata(
        icc_profile=image.icc_profile
        if image.icc_profile and _icc_fits(image.icc_profile, stored_channels)
        else None,
        exif=(exif if exif.startswith(_EXIF_HEADER) else _EXIF_HEADER + exif) if exif else None,
        durations=image.durations if len(frames) > 1 else None,
        loop=image.loop if len(frames) > 1 else None,
        compress_level=compress_level,
    )

    def encode(f: BinaryIO) -> None:
        if frames[0].dtype == np.uint16 and file_format == "PNG":
            _write_png16(f, frames[0], metadata)
        else:
            _save_with_pillow(f, frames, file_format, metadata)

    return encode


@dataclass(frozen=True)
class _Metadata:
    icc_profile: bytes | None
    exif: bytes | None  # starting with _EXIF_HEADER
    durations: tuple[int, ...] | None = None
    loop: int | None = None
    compress_level: int | None = None  # PNG's zlib level; None: 6


def _check_channels(name: str, file_format: str, channels: int, frames: int) -> None:
    if channels in (2, 4) and file_format in ("JPEG", "BMP"):
        raise SisrError(f"{name}: {file_format} cannot store the alpha channel; use .png, .webp or .tif")
    if frames > 1 and file_format not in _MULTI_FRAME_FORMATS:
        raise SisrError(f"{name}: {file_format} cannot store {frames} frames; use .webp, .png, .gif or .tif")


# ----------------------------------------------------------------------------------------------------
# Reading


def _decode_frames(
    im: PILImage.Image, data: bytes, name: str, first: np.ndarray, count: int
) -> tuple[list[np.ndarray], tuple[int, ...] | None]:
    """Decodes the frames after `first` (decoded already) up to `count`, all in one layout and depth.

    Returns the frames and, for several, their durations in milliseconds if every frame has one.
    """
    frames, durations = [first], [im.info.get("duration")]
    for index in range(1, count):
        im.seek(index)
        pixels = _decode(im, data, name, whole_file=False)
        if pixels.shape[:2] != first.shape[:2]:
            sizes = " and ".join(f"{f.shape[1]}x{f.shape[0]}" for f in (first, pixels))
            raise SisrError(f"{name}: its pages differ in size ({sizes}); sisr reads pages of one size")
        frames.append(pixels)
        durations.append(im.info.get("duration"))
    if count == 1:
        return frames, None
    frames = _common_layout(frames)
    if im.format == "WEBP" and frames[0].shape[2] == 4 and all((f[:, :, 3] == 255).all() for f in frames):
        # Pillow decodes every WebP animation as RGBA, whether or not its frames have alpha.
        frames = [f[:, :, :3] for f in frames]
    known = all(isinstance(d, (int, float)) and np.isfinite(d) and d >= 0 for d in durations)
    return frames, tuple(round(d) for d in durations) if known else None


def _common_layout(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Brings frames to one layout: colour if any is, alpha (opaque where absent) if any has, 16 bits
    if any has."""
    colour = any(f.shape[2] >= 3 for f in frames)
    alpha = any(f.shape[2] in (2, 4) for f in frames)
    dtype = np.uint16 if any(f.dtype == np.uint16 for f in frames) else np.uint8
    out = []
    for f in frames:
        if f.dtype != dtype:
            f = f.astype(dtype) * 257  # 8 to 16 bits: 255 -> 65535
        has_alpha = f.shape[2] in (2, 4)
        values = f[:, :, :-1] if has_alpha else f
        if colour and values.shape[2] == 1:
            values = np.repeat(values, 3, axis=2)
        if alpha:
            opaque = np.full((*f.shape[:2], 1), np.iinfo(dtype).max, dtype)
            values = np.concatenate([values, f[:, :, -1:] if has_alpha else opaque], axis=2)
        out.append(values)
    return out


def _decode(im: PILImage.Image, data: bytes, name: str, *, whole_file: bool = True) -> np.ndarray:
    """Fully decodes an opened Pillow image (of the file ``data``) into an (H, W, C) uint8/uint16 array.

    With `whole_file` (not a frame of an animation), 16-bit colour PNGs are decoded here at 16 bits.
    """
    if im.format == "PNG" and whole_file:
        header = data[:33]
        # IHDR is the first chunk: width, height, bit depth, colour type, compression, filter, interlace.
        if header[:8] == _PNG_SIGNATURE and header[12:16] == b"IHDR":
            bit_depth, colour_type, interlace = header[24], header[25], header[28]
            if bit_depth == 16 and colour_type in (2, 4, 6):
                return _read_png16_colour(data, name, im.size, colour_type, interlace)
    im.load()
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16)[:, :, None]
    if mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise SisrError(f"{name}: 32-bit or signed integer pixels are not supported")
        return values.astype(np.uint16)[:, :, None]
    if mode == "F":
        raise SisrError(f"{name}: floating-point pixels are not supported")
    if mode in ("L", "La") and ("transparency" in im.info or mode == "La"):
        im = im.convert("LA")
    elif mode in ("P", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode in ("P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise SisrError(f"{name}: unsupported pixel mode {mode!r}")
    pixels = np.asarray(im)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _read_png16_colour(
    data: bytes, name: str, size: tuple[int, int], colour_type: int, interlace: int
) -> np.ndarray:
    """Decodes a 16-bit RGB, RGBA or gray + alpha PNG, which Pillow would reduce to 8 bits."""
    idat = []
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise SisrError(f"{name}: cannot decode image: PNG file is truncated")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise SisrError(f"{name}: cannot decode image: PNG file is truncated")
        body = data[pos + 8 : end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise SisrError(f"{name}: cannot decode image: broken PNG file (bad {kind!r} checksum)")
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos = end
    stream = b"".join(idat)
    if colour_type == 4:
        # Gray+alpha at 16 bits has 4 bytes per pixel, the same filter stride as 8-bit RGBA: decoding as
        # raw RGBA returns the bytes (gray high, gray low, alpha high, alpha low) unchanged.
        raw = np.asarray(PILImage.frombytes("RGBA", size, stream, "zip", "RGBA", interlace)).astype(np.uint16)
        gray = raw[:, :, 0] << 8 | raw[:, :, 1]
        alpha = raw[:, :, 2] << 8 | raw[:, :, 3]
        return np.stack([gray, alpha], axis=2)
    mode = "RGB" if colour_type == 2 else "RGBA"
    # PNG samples are big-endian. The ";16B" unpacker keeps the first byte of each sample (high), the
    # ";16L" one the second (low); both unfilter with the true 6- or 8-byte pixel stride.
    high = np.asarray(PILImage.frombytes(mode, size, stream, "zip", f"{mode};16B", interlace))
    low = np.asarray(PILImage.frombytes(mode, size, stream, "zip", f"{mode};16L", interlace))
    return high.astype(np.uint16) << 8 | low


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1-8) to (H, W, C) pixels, as ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, -1)  # clockwise
    if orientation == 7:
        return pixels[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(pixels, 1)  # counter-clockwise
    return pixels  # 1, or an invalid value


def _exif_block(raw: object, orientation: int) -> bytes | None:
    """The EXIF block to keep (see :attr:`Image.exif`), given Pillow's ``info["exif"]``."""
    if not isinstance(raw, bytes) or not raw:
        return None
    block = raw if raw.startswith(_EXIF_HEADER) else _EXIF_HEADER + raw
    if orientation not in range(2, 9):  # nothing was applied (1, absent or an invalid value)
        return block
    # Only the orientation's two bytes change, so maker notes and offsets stay valid. Were it not found
    # where it is expected, keeping the block would have viewers turn the upright pixels once more.
    return _reset_orientation(block)


def _reset_orientation(block: bytes) -> bytes | None:
    """Sets the orientation in IFD0 of an EXIF block to 1 in place, or returns None if it cannot."""
    tiff = block[len(_EXIF_HEADER) :]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    magic, ifd = struct.unpack(order + "HI", tiff[2:8])
    if magic != 42 or ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind, values = struct.unpack(order + "HHI", tiff[entry : entry + 8])
        if tag == _EXIF_ORIENTATION:
            if kind != 3 or values != 1:  # not one SHORT
                return None
            at = len(_EXIF_HEADER) + entry + 8
            return block[:at] + struct.pack(order + "H", 1) + block[at + 2 :]
    return None


def _icc_fits(profile: bytes, channels: int) -> bool:
    """Whether an ICC profile's colour space (header bytes 16-19) is that of gray or RGB pixels."""
    return profile[16:20] == (b"GRAY" if channels <= 2 else b"RGB ")


# Magic bytes of files people may take for images, for saying what a file is when Pillow cannot open it.
_SIGNATURES = (
    (0, _PNG_SIGNATURE, "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "BigTIFF"),
    (0, b"MM\x00+", "BigTIFF"),
    (8, b"WEBP", "WebP"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"8BPS", "Photoshop (PSD)"),
    (0, b"%PDF", "PDF"),
    (0, b"%!PS", "PostScript"),
    (0, b"\x00\x00\x01\x00", "Windows icon (ICO)"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DirectDraw Surface (DDS)"),
    (0, b"<svg", "SVG"),
)

# TIFF compression codes Pillow lacks a decoder for, by name.
_TIFF_COMPRESSIONS = {
    34712: "JPEG 2000",
    33003: "Aperio JPEG 2000",
    33005: "Aperio JPEG 2000",
    34892: "lossy JPEG",
    50002: "JPEG XL",
    52546: "JPEG XL",
}
_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating point", 4: "undefined"}


def _unidentified(data: bytes) -> str:
    """Why Pillow could not open `data`, said from its magic bytes (the message after the file name)."""
    kind = next((k for at, magic, k in _SIGNATURES if data[at : at + len(magic)] == magic), None)
    if kind == "WebP" and data[:4] != b"RIFF":
        kind = None
    if kind is None:
        return f"not {_SUPPORTED}"
    if kind == "TIFF":
        return f"cannot decode TIFF image: {_tiff_problem(data)}"
    if kind in ("PNG", "JPEG", "BMP", "WebP", "GIF"):
        return f"cannot decode {kind} image: its header is corrupt or of a variant that cannot be read"
    return f"is a {kind} file, not {_SUPPORTED}"


def _tiff_problem(data: bytes) -> str:
    """Reads the first TIFF directory's layout tags to say what Pillow cannot read about the file."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
        tags: dict[int, int] = {}
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, values = struct.unpack(order + "HHI", data[entry : entry + 8])
            if kind in (3, 4) and values >= 1:  # SHORT or LONG: the first value
                fmt, size = ("H", 2) if kind == 3 else ("I", 4)
                if values * size <= 4:
                    (tags[tag],) = struct.unpack(order + fmt, data[entry + 8 : entry + 8 + size])
                else:
                    (offset,) = struct.unpack(order + "I", data[entry + 8 : entry + 12])
                    (tags[tag],) = struct.unpack(order + fmt, data[offset : offset + size])
    except struct.error:
        return "its first directory is truncated or corrupt"
    compression = tags.get(259, 1)
    if compression not in TiffImagePlugin.COMPRESSION_INFO:
        known = _TIFF_COMPRESSIONS.get(compression)
        return f"compression {compression}{f' ({known})' if known else ''} is not supported"
    samples, bits = tags.get(277, 1), tags.get(258, 1)
    sample_format = _TIFF_SAMPLE_FORMATS.get(tags.get(339, 1), f"code {tags.get(339)}")
    return (
        f"{samples} sample(s) per pixel of {bits}-bit {sample_format} (photometric {tags.get(262, '?')}) "
        "are not supported"
    )


def _report_warnings(name: str, caught: list[warnings.WarningMessage]) -> None:
    """Prints Pillow's warnings about a file it decoded as one line (Python would print them raw)."""
    texts = list(dict.fromkeys(_one_line(w.message) for w in caught))
    if texts:
        print(f"sisr: warning: {name}: {'; '.join(texts)}", file=sys.stderr, flush=True)


def _one_line(e: BaseException | Warning | str) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


# ----------------------------------------------------------------------------------------------------
# Writing


def _as_hwc(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"pixels must be uint8 or uint16, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or 0 in pixels.shape:
        raise ValueError(f"pixels must be (H, W) or (H, W, C) with C in 1, 2, 3, 4, got shape {pixels.shape}")
    return pixels


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    # 65535 / 257 = 255, so rounding v / 257 maps the 16-bit range onto the 8-bit one.
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _save_with_pillow(
    f: BinaryIO, frames: Sequence[np.ndarray], file_format: str, metadata: _Metadata
) -> None:
    first, *later = (_pillow_image(pixels, file_format) for pixels in frames)
    options: dict[str, object] = {}
    if file_format == "JPEG":
        options = {"quality": 95, "subsampling": 0}
    elif file_format == "WEBP":
        options = {"lossless": True, "exact": True}
    elif file_format == "TIFF":
        options = {"compression": "tiff_lzw"}
    elif file_format == "PNG" and metadata.compress_level is not None:
        options = {"compress_level": metadata.compress_level}
    if metadata.icc_profile is not None and file_format != "BMP":
        options["icc_profile"] = metadata.icc_profile
    if metadata.exif is not None and file_format in ("PNG", "JPEG", "WEBP"):
        options["exif"] = metadata.exif
    if later:
        options.update(save_all=True, append_images=later)
        if file_format == "PNG":
            options["default_image"] = False  # the first frame is part of the animation
        if file_format != "TIFF" and metadata.durations is not None:
            options["duration"] = list(metadata.durations)
        if file_format != "TIFF" and metadata.loop is not None:
            options["loop"] = metadata.loop
        if file_format == "GIF":
            options["disposal"] = 2  # frames are whole: each replaces the one before, transparency too
    first.save(f, format=file_format, **options)


def _pillow_image(pixels: np.ndarray, file_format: str) -> PILImage.Image:
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:  # gray only (see write_image)
        return PILImage.fromarray(np.ascontiguousarray(pixels[:, :, 0]))  # mode "I;16"
    if channels == 2:
        im = PILImage.fromarray(np.ascontiguousarray(pixels), mode="LA")
        return im.convert("RGBA") if file_format in ("WEBP", "GIF") else im  # they have no gray + alpha
    return PILImage.fromarray(np.ascontiguousarray(pixels[:, :, 0] if channels == 1 else pixels))


def _write_png16(f: BinaryIO, pixels: np.ndarray, metadata: _Metadata) -> None:
    """Encodes a 16-bit gray, gray + alpha, RGB or RGBA PNG with per-row adaptive filtering."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    stride = 2 * channels  # bytes per pixel, the filter distance
    # (H, W*C*2) big-endian bytes of each row.
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, width * stride)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    f.write(_PNG_SIGNATURE)
    f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)))
    if metadata.icc_profile is not None:  # profile name, compression method 0 (zlib), profile
        f.write(chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(metadata.icc_profile)))
    if metadata.exif is not None:  # the TIFF structure, without the JPEG's "Exif\0\0"
        f.write(chunk(b"eXIf", metadata.exif[len(_EXIF_HEADER) :]))
    compressor = zlib.compressobj(6 if metadata.compress_level is None else metadata.compress_level)
    previous = np.zeros((1, rows.shape[1]), dtype=np.uint8)
    block = max(1, (1 << 22) // rows.shape[1])  # ~4 MB of row bytes per step bounds memory
    for top in range(0, height, block):
        current = rows[top : top + block]
        filtered = _filter_rows(current, previous, stride)
        out = compressor.compress(filtered.tobytes())
        if out:
            f.write(chunk(b"IDAT", out))
        previous = current[-1:]
    f.write(chunk(b"IDAT", compressor.flush()))
    f.write(chunk(b"IEND", b""))


def _filter_rows(rows: np.ndarray, previous: np.ndarray, stride: int) -> np.ndarray:
    """PNG-filters (N, L) row bytes given the row above; returns (N, 1 + L) with the filter type first.

    All five filters are computed and each row keeps the one with the smallest sum of absolute signed
    bytes, the heuristic the PNG specification recommends.
    """
    x = rows.astype(np.int16)
    up = np.concatenate([previous, rows[:-1]]).astype(np.int16)
    left = np.zeros_like(x)
    left[:, stride:] = x[:, :-stride]
    up_left = np.zeros_like(x)
    up_left[:, stride:] = up[:, :-stride]
    estimate = left + up - up_left
    dist_left, dist_up, dist_up_left = (np.abs(estimate - v) for v in (left, up, up_left))
    paeth = np.where(
        (dist_left <= dist_up) & (dist_left <= dist_up_left),
        left,
        np.where(dist_up <= dist_up_left, up, up_left),
    )
    # (5, N, L): None, Sub, Up, Average, Paeth, wrapped to bytes.
    candidates = np.stack([x, x - left, x - up, x - (left + up) // 2, x - paeth]).astype(np.uint8)
    signed = candidates.view(np.int8).astype(np.int32)
    best = np.abs(signed).sum(axis=2).argmin(axis=0)  # (N,)
    chosen = np.take_along_axis(candidates, best[None, :, None], axis=0)[0]
    return np.concatenate([best.astype(np.uint8)[:, None], chosen], axis=1)
