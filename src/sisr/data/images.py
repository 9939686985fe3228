"""Reading and writing images as numpy arrays, with the checks a command-line tool needs.

Pixels are always ``(H, W, C)`` arrays, C being 1 (gray), 3 (RGB) or 4 (RGBA), of dtype ``uint8`` or
``uint16``. Reading applies the EXIF orientation, decodes the whole file (so truncated files fail here
rather than later) and refuses images above a pixel budget before decoding them. Every problem with a
file becomes a one-line :class:`~sisr.errors.SisrError` that names the file.

Pillow keeps 16-bit gray images but reduces 16-bit colour PNGs to 8 bits, so those are decoded here:
Pillow's own PNG decoder (``zip``) unfilters the image data twice, once keeping the high and once the low
byte of every sample. Writing 16-bit colour PNGs, which Pillow cannot do, uses a small encoder below.
16-bit colour TIFFs are read by Pillow at 8 bits.

Formats follow the file extension when writing:

======================  =========================================================================
``.png``                8 or 16 bits, gray, RGB or RGBA.
``.jpg``, ``.jpeg``     8 bits, quality 95 without chroma subsampling; no alpha.
``.webp``               lossless (super-resolved detail is not thrown away again); gray becomes RGB.
``.bmp``                8 bits; no alpha.
``.tif``, ``.tiff``     LZW-compressed; 8 bits, or 16 bits for gray.
======================  =========================================================================

16-bit pixels written to a format (or, for colour, to TIFF) that holds only 8 bits are rounded to 8.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from sisr.atomic import atomic_write
from sisr.errors import SisrError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "Image",
    "decode_image",
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
}

# Decoders that may run on user files (the JPEG one also opens phone cameras' MPO files). Limiting the
# list also keeps Pillow away from formats that start external programs (EPS runs Ghostscript).
_READ_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")

# Exceptions Pillow, zlib and struct raise on corrupt data.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image.

    Attributes:
        pixels: ``(H, W, C)`` array, C = 1 (gray), 3 (RGB) or 4 (RGBA), dtype uint8 or uint16, upright
            (EXIF orientation applied).
        format: Pillow's name of the file format, e.g. ``"PNG"``, ``"JPEG"``, ``"WEBP"``.
    """

    pixels: np.ndarray
    format: str

    @property
    def mode(self) -> Literal["gray", "RGB", "RGBA"]:
        """Colour layout: ``"gray"``, ``"RGB"`` or ``"RGBA"``."""
        return {1: "gray", 3: "RGB", 4: "RGBA"}[self.pixels.shape[2]]

    @property
    def bit_depth(self) -> Literal[8, 16]:
        """Bits per sample: 8 for uint8 pixels, 16 for uint16 pixels."""
        return 16 if self.pixels.dtype == np.uint16 else 8


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Reads and fully decodes a PNG, JPEG, WebP, BMP or TIFF file.

    Palette images become RGB, or RGBA when they have transparency; gray with alpha becomes RGBA; 1-bit
    images become 8-bit gray; CMYK and YCbCr become RGB. 16-bit gray PNG/TIFF and 16-bit colour PNG are
    returned as uint16. Only the first frame of animated or multi-page files is read.

    Args:
        path: The image file.
        max_pixels: Largest accepted width * height, checked from the header before decoding.

    Returns:
        The upright image.

    Raises:
        SisrError: The file is missing, empty, not an image, truncated or corrupt, has an unsupported
            pixel type, or exceeds `max_pixels`.
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
    return decode_image(data, name, max_pixels=max_pixels)


def decode_image(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decodes an encoded image held in memory (an LMDB value, say) exactly as :func:`read_image` does.

    Args:
        data: The bytes of a PNG, JPEG, WebP, BMP or TIFF file.
        name: What to call the image in error messages.
        max_pixels: Largest accepted width * height, checked from the header before decoding.

    Returns:
        The upright image.

    Raises:
        SisrError: As :func:`read_image`.
    """
    if not data:
        raise SisrError(f"{name}: file is empty")
    try:
        # Pillow warns (and above twice its limit raises) about large images; our own check replaces it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=_READ_FORMATS) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise SisrError(
                        f"{name}: image is {width}x{height} = {width * height} pixels, more than the "
                        f"limit of {max_pixels} (a decompression bomb?)"
                    )
                pixels = _decode(im, data, name)
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
                file_format = im.format or "unknown"
    except SisrError:
        raise
    except PILImage.DecompressionBombError as e:  # only when max_pixels is above Pillow's own limit
        raise SisrError(f"{name}: image is too large: {_one_line(e)}") from None
    except UnidentifiedImageError:
        raise SisrError(f"{name}: not a PNG, JPEG, WebP, BMP or TIFF image") from None
    except _DECODE_ERRORS as e:
        raise SisrError(f"{name}: cannot decode image: {_one_line(e)}") from None
    return Image(pixels=np.ascontiguousarray(_orient(pixels, orientation)), format=file_format)


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


def write_image(path: str | os.PathLike[str], pixels: np.ndarray, *, format: str | None = None) -> None:
    """Writes an image atomically: a partly written file never appears under `path`.

    The data goes to a hidden temporary file next to `path` that is renamed over `path` once complete,
    and removed if anything fails (including KeyboardInterrupt).

    Args:
        path: Output file. Its directory must exist.
        pixels: ``(H, W)`` or ``(H, W, C)`` array with C in (1, 3, 4), dtype uint8 or uint16.
        format: Overrides the format chosen from the extension (see :func:`format_for_path`).

    Raises:
        SisrError: Unknown format, alpha for a format without it, or the file cannot be written.
        TypeError: `pixels` has an unsupported dtype.
        ValueError: `pixels` has an unsupported shape.
    """
    name = os.fspath(path)
    file_format = format_for_path(name, format)
    pixels = _as_hwc(pixels)
    channels = pixels.shape[2]
    if channels == 4 and file_format in ("JPEG", "BMP"):
        raise SisrError(f"{name}: {file_format} cannot store the alpha channel; use .png, .webp or .tif")
    if pixels.dtype == np.uint16 and not (file_format == "PNG" or (file_format == "TIFF" and channels == 1)):
        pixels = _to_8bit(pixels)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            if pixels.dtype == np.uint16 and file_format == "PNG":
                _write_png16(f, pixels)
            else:
                _save_with_pillow(f, pixels, file_format)

    try:
        atomic_write(name, write)
    except OSError as e:
        raise SisrError(f"{name}: cannot write: {_one_line(e)}") from None


# ----------------------------------------------------------------------------------------------------
# Reading


def _decode(im: PILImage.Image, data: bytes, name: str) -> np.ndarray:
    """Fully decodes an opened Pillow image (of the file ``data``) into an (H, W, C) uint8/uint16 array."""
    if im.format == "PNG":
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
    if mode in ("P", "L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode in ("P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    if im.mode not in ("L", "RGB", "RGBA"):
        raise SisrError(f"{name}: unsupported pixel mode {mode!r}")
    pixels = np.asarray(im)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _read_png16_colour(
    data: bytes, name: str, size: tuple[int, int], colour_type: int, interlace: int
) -> np.ndarray:
    """Decodes a 16-bit RGB, RGBA or gray+alpha PNG, which Pillow would reduce to 8 bits."""
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
        return np.stack([gray, gray, gray, alpha], axis=2)
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


def _one_line(e: BaseException) -> str:
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
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or 0 in pixels.shape:
        raise ValueError(f"pixels must be (H, W) or (H, W, C) with C in 1, 3, 4, got shape {pixels.shape}")
    return pixels


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    # 65535 / 257 = 255, so rounding v / 257 maps the 16-bit range onto the 8-bit one.
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _save_with_pillow(f: BinaryIO, pixels: np.ndarray, file_format: str) -> None:
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:  # gray only (see write_image)
        im = PILImage.fromarray(np.ascontiguousarray(pixels[:, :, 0]))  # mode "I;16"
    else:
        im = PILImage.fromarray(np.ascontiguousarray(pixels[:, :, 0] if channels == 1 else pixels))
    options: dict[str, object] = {}
    if file_format == "JPEG":
        options = {"quality": 95, "subsampling": 0}
    elif file_format == "WEBP":
        options = {"lossless": True, "exact": True}
    elif file_format == "TIFF":
        options = {"compression": "tiff_lzw"}
    im.save(f, format=file_format, **options)


def _write_png16(f: BinaryIO, pixels: np.ndarray) -> None:
    """Encodes a 16-bit gray, RGB or RGBA PNG with per-row adaptive filtering."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    stride = 2 * channels  # bytes per pixel, the filter distance
    # (H, W*C*2) big-endian bytes of each row.
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, width * stride)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    f.write(_PNG_SIGNATURE)
    f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)))
    compressor = zlib.compressobj(6)
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
