"""Reading and writing images: formats, bit depths, orientation, and every kind of bad file."""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
import socket
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageOps

from sisr.atomic import TEMPORARY_PATTERN, atomic_write
from sisr.data import images as imageio
from sisr.data.images import Image, decode_image, format_for_path, read_image, write_image
from sisr.errors import SisrError

# ----------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".webp"])
@pytest.mark.parametrize("mode", ["gray", "RGB", "RGBA"])
def test_lossless_round_trip_8bit(
    tmp_path: Path, ext: str, mode: str, gray_photo: np.ndarray, rgb_photo: np.ndarray, rgba_photo: np.ndarray
) -> None:
    pixels = {"gray": gray_photo[:, :, None], "RGB": rgb_photo, "RGBA": rgba_photo}[mode]
    path = tmp_path / f"img{ext}"
    if mode == "RGBA" and ext == ".bmp":
        with pytest.raises(SisrError, match="alpha"):
            write_image(path, pixels)
        assert list(tmp_path.iterdir()) == []
        return
    write_image(path, pixels)
    image = read_image(path)
    assert image.bit_depth == 8
    assert image.pixels.dtype == np.uint8
    assert image.format == {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".webp": "WEBP"}[ext]
    if ext == ".webp" and mode == "gray":  # WebP has no gray: it comes back as RGB
        assert image.mode == "RGB"
        np.testing.assert_array_equal(image.pixels, np.repeat(pixels, 3, axis=2))
    else:
        assert image.mode == mode
        np.testing.assert_array_equal(image.pixels, pixels)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("mode", ["gray", "RGB"])
def test_jpeg_round_trip(tmp_path: Path, mode: str, gray_photo: np.ndarray, rgb_photo: np.ndarray) -> None:
    pixels = gray_photo[:, :, None] if mode == "gray" else rgb_photo
    write_image(tmp_path / "a.jpeg", pixels)
    image = read_image(tmp_path / "a.jpeg")
    assert (image.mode, image.bit_depth, image.format) == (mode, 8, "JPEG")
    mse = np.mean((image.pixels.astype(float) - pixels) ** 2)
    assert 10 * np.log10(255**2 / mse) > 38  # quality 95, no chroma subsampling


def test_2d_gray_is_accepted_and_read_back_as_hw1(tmp_path: Path, gray_photo: np.ndarray) -> None:
    write_image(tmp_path / "g.png", gray_photo)
    assert read_image(tmp_path / "g.png").pixels.shape == (*gray_photo.shape, 1)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_png_round_trip(tmp_path: Path, channels: int, rgb16_photo: np.ndarray) -> None:
    if channels == 1:
        pixels = rgb16_photo[:, :, 1:2]
    elif channels == 3:
        pixels = rgb16_photo
    else:
        pixels = np.dstack([rgb16_photo, rgb16_photo[:, :, 0][:, ::-1]])
    path = tmp_path / "deep.png"
    write_image(path, pixels)
    image = read_image(path)
    assert (image.bit_depth, image.format, image.pixels.dtype) == (16, "PNG", np.uint16)
    assert image.mode == {1: "gray", 3: "RGB", 4: "RGBA"}[channels]
    np.testing.assert_array_equal(image.pixels, pixels)
    # An independent decoder agrees on the file: Pillow keeps 16-bit gray, and the high bytes of colour.
    with PILImage.open(path) as im:
        theirs = np.asarray(im)
    if channels == 1:
        np.testing.assert_array_equal(theirs, pixels[:, :, 0])
    else:
        np.testing.assert_array_equal(theirs, (pixels >> 8).astype(np.uint8))


def _plain_png(pixels: np.ndarray, colour_type: int, interlace: bool) -> bytes:
    """A 16-bit PNG written without filtering by a minimal encoder independent of sisr's."""
    height, width = pixels.shape[:2]
    samples = pixels.reshape(height, width, -1).astype(">u2")
    if interlace:  # Adam7: seven sub-images, each row prefixed by filter type 0
        passes = [
            (0, 0, 8, 8),
            (0, 4, 8, 8),
            (4, 0, 8, 4),
            (0, 2, 4, 4),
            (2, 0, 4, 2),
            (0, 1, 2, 2),
            (1, 0, 2, 1),
        ]
        raw = b""
        for y0, x0, dy, dx in passes:
            sub = samples[y0::dy, x0::dx]
            if sub.size:
                raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    else:
        raw = b"".join(b"\x00" + row.tobytes() for row in samples)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlace))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("colour_type", [2, 4, 6])
def test_16bit_colour_png_from_another_encoder(
    tmp_path: Path, colour_type: int, interlace: bool, rgb16_photo: np.ndarray
) -> None:
    pixels = rgb16_photo[:13, :11]  # odd sizes exercise partial Adam7 passes
    if colour_type == 4:  # gray + alpha, returned as such (C = 2)
        stored = expected = np.dstack([pixels[:, :, 0], pixels[:, :, 2]])
    elif colour_type == 6:
        stored = expected = np.dstack([pixels, pixels[:, :, 1][::-1]])
    else:
        stored = expected = pixels
    path = tmp_path / "other.png"
    path.write_bytes(_plain_png(stored, colour_type, interlace))
    image = read_image(path)
    assert image.bit_depth == 16
    np.testing.assert_array_equal(image.pixels, expected)


def test_16bit_gray_tiff_round_trip(tmp_path: Path, rgb16_photo: np.ndarray) -> None:
    write_image(tmp_path / "deep.tiff", rgb16_photo[:, :, 0])
    image = read_image(tmp_path / "deep.tiff")
    assert (image.mode, image.bit_depth, image.format) == ("gray", 16, "TIFF")
    np.testing.assert_array_equal(image.pixels[:, :, 0], rgb16_photo[:, :, 0])


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".jpg"])
def test_16bit_colour_to_an_8bit_format_is_rounded(tmp_path: Path, ext: str, rgb16_photo: np.ndarray) -> None:
    write_image(tmp_path / f"x{ext}", rgb16_photo)
    image = read_image(tmp_path / f"x{ext}")
    assert image.bit_depth == 8
    error = np.abs(image.pixels.astype(float) - np.round(rgb16_photo / 257.0))
    if ext == ".jpg":
        assert error.mean() < 2
    else:
        assert error.max() == 0


def test_extension_decides_format_and_content_decides_reading(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    assert format_for_path("a/b.JPG") == "JPEG"
    assert format_for_path("x.png", "tiff") == "TIFF"
    write_image(tmp_path / "png_inside.jpg", rgb_photo, format="png")
    image = read_image(tmp_path / "png_inside.jpg")
    assert image.format == "PNG"
    np.testing.assert_array_equal(image.pixels, rgb_photo)


# ----------------------------------------------------------------------------------------------------
# Pixel modes and orientation


def test_palette_and_odd_modes(tmp_path: Path, rgb_photo: np.ndarray, gray_photo: np.ndarray) -> None:
    pal = PILImage.fromarray(rgb_photo).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(image.pixels, np.asarray(pal.convert("RGB")))

    pal.save(tmp_path / "pt.png", transparency=3)
    image = read_image(tmp_path / "pt.png")
    assert image.mode == "RGBA"
    indices = np.asarray(pal)
    np.testing.assert_array_equal(image.pixels[:, :, 3], np.where(indices == 3, 0, 255))

    la = PILImage.fromarray(np.dstack([gray_photo, gray_photo[::-1]]), mode="LA")
    la.save(tmp_path / "la.png")
    image = read_image(tmp_path / "la.png")
    assert image.mode == "LA"
    np.testing.assert_array_equal(image.pixels, np.dstack([gray_photo, gray_photo[::-1]]))

    PILImage.fromarray(gray_photo > 128).save(tmp_path / "bw.bmp")
    image = read_image(tmp_path / "bw.bmp")
    assert image.mode == "gray"
    np.testing.assert_array_equal(image.pixels[:, :, 0], np.where(gray_photo > 128, 255, 0))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path: Path, orientation: int, rgb_photo: np.ndarray) -> None:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    PILImage.fromarray(rgb_photo).save(path, exif=exif, quality=95)
    image = read_image(path)
    with PILImage.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(image.pixels, expected)
    transposed = orientation >= 5
    assert image.pixels.shape[:2] == (rgb_photo.shape[1::-1] if transposed else rgb_photo.shape[:2])


def test_exif_orientation_6_rotates_clockwise(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "the camera was turned: rotate 90 degrees clockwise to view"
    PILImage.fromarray(rgb_photo).save(tmp_path / "r.png", exif=exif)
    pixels = read_image(tmp_path / "r.png").pixels
    np.testing.assert_array_equal(pixels, np.rot90(rgb_photo, -1))
    assert pixels[0, -1].tolist() == rgb_photo[0, 0].tolist()  # top-left went to top-right


# ----------------------------------------------------------------------------------------------------
# Bad files


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_missing_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(SisrError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(SisrError, match=r"empty\.png: file is empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(SisrError, match="is a directory"):
        read_image(tmp_path)


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    with pytest.raises(SisrError, match=r"notes\.png: not a PNG, JPEG, WebP, BMP, TIFF or GIF image"):
        read_image(tmp_path / "notes.png")


def test_formats_outside_the_list_are_refused(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    PILImage.fromarray(rgb_photo).save(tmp_path / "a.pcx")
    with pytest.raises(SisrError, match=r"a\.pcx: not a PNG, JPEG"):
        read_image(tmp_path / "a.pcx")
    PILImage.fromarray(rgb_photo).save(tmp_path / "a.ico")
    with pytest.raises(SisrError, match=r"a\.ico: is a Windows icon \(ICO\) file, not a PNG, JPEG"):
        read_image(tmp_path / "a.ico")


@pytest.mark.parametrize("kind", ["png", "jpeg", "png16"])
def test_truncated(tmp_path: Path, kind: str, rgb_photo: np.ndarray, rgb16_photo: np.ndarray) -> None:
    if kind == "png16":
        write_image(tmp_path / "full.png", rgb16_photo)
        full = (tmp_path / "full.png").read_bytes()
    elif kind == "png":
        full = _png_bytes(rgb_photo)
    else:
        buf = io.BytesIO()
        PILImage.fromarray(rgb_photo).save(buf, format="JPEG")
        full = buf.getvalue()
    path = tmp_path / "cut.img"
    path.write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(SisrError, match=r"cut\.img: cannot decode image"):
        read_image(path)


def test_corrupt_16bit_png_checksum(tmp_path: Path, rgb16_photo: np.ndarray) -> None:
    write_image(tmp_path / "a.png", rgb16_photo)
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[60] ^= 0xFF  # inside the first IDAT chunk
    (tmp_path / "a.png").write_bytes(bytes(data))
    with pytest.raises(SisrError, match=r"a\.png: cannot decode image"):
        read_image(tmp_path / "a.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    write_image(tmp_path / "a.png", rgb_photo)
    with pytest.raises(SisrError, match=r"a\.png: image is 48x40 = 1920 pixels, more than the limit of 1000"):
        read_image(tmp_path / "a.png", max_pixels=1000)
    assert read_image(tmp_path / "a.png", max_pixels=1920).pixels.shape == (40, 48, 3)

    # A header claiming 12000 x 12000 16-bit RGB pixels (between Pillow's warning and error limits) with
    # almost no data: refused from the header by the default limit, without a warning.
    ihdr = struct.pack(">IIBBBBB", 12_000, 12_000, 16, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc
    (tmp_path / "bomb.png").write_bytes(bomb + _png_bytes(rgb_photo)[33:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SisrError, match=r"bomb\.png: image is 12000x12000 = 144000000 pixels, more than"):
            read_image(tmp_path / "bomb.png")


def test_pillow_bomb_warning_and_error_do_not_leak(
    tmp_path: Path, rgb_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "a.png", rgb_photo)  # 1920 pixels
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1500)  # Pillow warns above 1500, raises above 3000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "a.png").pixels.shape == (40, 48, 3)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 900)
    with pytest.raises(SisrError, match=r"a\.png: .*exceeds limit"):
        read_image(tmp_path / "a.png")


def test_unsupported_pixel_types(tmp_path: Path) -> None:
    PILImage.fromarray(np.full((4, 5), 0.5, dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(SisrError, match=r"f\.tif: floating-point"):
        read_image(tmp_path / "f.tif")
    PILImage.fromarray(np.full((4, 5), 70000, dtype=np.int32), mode="I").save(tmp_path / "i.tif")
    with pytest.raises(SisrError, match=r"i\.tif: 32-bit"):
        read_image(tmp_path / "i.tif")


# ----------------------------------------------------------------------------------------------------
# Writing safely


def test_write_errors_leave_nothing(tmp_path: Path, rgba_photo: np.ndarray, rgb_photo: np.ndarray) -> None:
    with pytest.raises(SisrError, match=r"out\.jpg: JPEG cannot store the alpha channel"):
        write_image(tmp_path / "out.jpg", rgba_photo)
    with pytest.raises(SisrError, match=r"out\.pcx: cannot choose an image format for extension '\.pcx'"):
        write_image(tmp_path / "out.pcx", rgb_photo)
    with pytest.raises(SisrError, match="no extension"):
        write_image(tmp_path / "out", rgb_photo)
    with pytest.raises(SisrError, match=r"out\.png: cannot write"):
        write_image(tmp_path / "missing" / "out.png", rgb_photo)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(SisrError, match=r"dir\.png: cannot write"):
        write_image(tmp_path / "dir.png", rgb_photo)
    assert [p.name for p in tmp_path.iterdir()] == ["dir.png"]
    with pytest.raises(TypeError):
        write_image(tmp_path / "f.png", rgb_photo.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "f.png", np.dstack([rgb_photo, rgb_photo[:, :, :2]]))  # 5 channels


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_old_file_and_removes_temporary(
    tmp_path: Path, failure: BaseException, rgb_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.png"
    write_image(path, rgb_photo)
    before = path.read_bytes()

    def broken_save(f: io.BufferedWriter, pixels: np.ndarray, file_format: str, metadata: object) -> None:
        f.write(b"\x89PNG partial")
        raise failure

    monkeypatch.setattr(imageio, "_save_with_pillow", broken_save)
    with pytest.raises(SisrError if isinstance(failure, OSError) else KeyboardInterrupt):
        write_image(path, rgb_photo[::-1])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_written_file_has_default_permissions(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    mask = os.umask(0o022)
    try:
        write_image(tmp_path / "p.png", rgb_photo)
    finally:
        os.umask(mask)
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------------------------------
# Gray + alpha


@pytest.mark.parametrize("ext", [".png", ".tif", ".webp"])
def test_gray_with_alpha_round_trip(tmp_path: Path, ext: str, rgba_photo: np.ndarray) -> None:
    la = np.dstack([rgba_photo[:, :, 0], rgba_photo[:, :, 3]])
    write_image(tmp_path / f"la{ext}", la)
    image = read_image(tmp_path / f"la{ext}")
    if ext == ".webp":  # WebP has no gray: gray + alpha comes back as RGBA
        assert image.mode == "RGBA"
        np.testing.assert_array_equal(image.pixels, np.dstack([la[:, :, :1]] * 3 + [la[:, :, 1:]]))
    else:
        assert (image.mode, image.pixels.shape) == ("LA", (40, 48, 2))
        np.testing.assert_array_equal(image.pixels, la)
    with PILImage.open(tmp_path / f"la{ext}") as im:
        assert im.mode == ("RGBA" if ext == ".webp" else "LA")


def test_gray_with_alpha_16bit_png(tmp_path: Path, rgb16_photo: np.ndarray) -> None:
    la = np.ascontiguousarray(rgb16_photo[:, :, ::2])
    write_image(tmp_path / "la16.png", la)
    image = read_image(tmp_path / "la16.png")
    assert (image.mode, image.bit_depth) == ("LA", 16)
    np.testing.assert_array_equal(image.pixels, la)
    with PILImage.open(tmp_path / "la16.png") as im:  # Pillow reads it as LA, with the high bytes
        np.testing.assert_array_equal(np.asarray(im.convert("LA")), (la >> 8).astype(np.uint8))


def test_gray_with_a_transparent_value_is_gray_with_alpha(tmp_path: Path, gray_photo: np.ndarray) -> None:
    value = int(gray_photo[0, 0])
    PILImage.fromarray(gray_photo).save(tmp_path / "t.png", transparency=value)
    image = read_image(tmp_path / "t.png")
    assert image.mode == "LA"
    np.testing.assert_array_equal(image.pixels[:, :, 0], gray_photo)
    np.testing.assert_array_equal(image.pixels[:, :, 1], np.where(gray_photo == value, 0, 255))


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_gray_with_alpha_to_a_format_without_alpha(tmp_path: Path, ext: str, gray_photo: np.ndarray) -> None:
    with pytest.raises(SisrError, match="cannot store the alpha channel"):
        write_image(tmp_path / f"la{ext}", np.dstack([gray_photo, gray_photo]))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# Frames


def _frames_file(path: Path, rgb_photo: np.ndarray, count: int, **options: object) -> list[np.ndarray]:
    """Writes `count` shifted copies of the photo with Pillow; returns the frames (64 colours, for GIF)."""
    palette = PILImage.fromarray(rgb_photo).quantize(colors=64).convert("RGB")
    frames = [np.roll(np.asarray(palette), 5 * k, axis=1) for k in range(count)]
    first, *later = (PILImage.fromarray(f) for f in frames)
    lossless = {"lossless": True} if path.suffix == ".webp" else {}
    first.save(path, save_all=True, append_images=later, **lossless, **options)
    return frames


@pytest.mark.parametrize(
    ("ext", "what"), [(".webp", "frames"), (".png", "frames"), (".gif", "frames"), (".tiff", "pages")]
)
def test_frames_are_refused_unless_all_are_asked_for(
    tmp_path: Path, ext: str, what: str, rgb_photo: np.ndarray
) -> None:
    frames = _frames_file(tmp_path / f"anim{ext}", rgb_photo, 12, duration=80, loop=0)
    with pytest.raises(SisrError, match=rf"^\S*anim\{ext}: has 12 {what}; a single image is needed here"):
        read_image(tmp_path / f"anim{ext}")
    assert len(read_image(tmp_path / f"anim{ext}", all_frames=True).frames) == 12
    _frames_file(tmp_path / f"one{ext}", rgb_photo, 1)  # a one-frame file of the same kind reads as ever
    image = read_image(tmp_path / f"one{ext}")
    assert image.frames == (image.pixels,) and image.durations is None and image.loop is None
    np.testing.assert_array_equal(image.pixels, frames[0])


@pytest.mark.parametrize("source", [".webp", ".png", ".gif", ".tiff"])
@pytest.mark.parametrize("target", [".webp", ".png", ".gif", ".tiff"])
def test_every_frame_with_its_duration_and_the_loop_count_survives(
    tmp_path: Path, source: str, target: str, rgb_photo: np.ndarray
) -> None:
    frames = _frames_file(tmp_path / f"in{source}", rgb_photo, 3, duration=[80, 120, 200], loop=3)
    image = read_image(tmp_path / f"in{source}", all_frames=True)
    assert len(image.frames) == 3
    for got, made in zip(image.frames, frames, strict=True):
        np.testing.assert_array_equal(got, made)
    if source != ".tiff":  # TIFF pages have no timing
        assert (image.durations, image.loop) == ((80, 120, 200), 3)
    write_image(tmp_path / f"out{target}", image)
    again = read_image(tmp_path / f"out{target}", all_frames=True)
    assert len(again.frames) == 3
    for got, made in zip(again.frames, frames, strict=True):
        np.testing.assert_array_equal(got, made)
    if source != ".tiff" and target != ".tiff":
        assert (again.durations, again.loop) == ((80, 120, 200), 3)
    with PILImage.open(tmp_path / f"out{target}") as im:  # an independent reader sees the frames
        assert im.n_frames == 3


@pytest.mark.parametrize("target", [".webp", ".png"])
def test_animations_keep_icc_profile_and_exif(tmp_path: Path, target: str, rgb_photo: np.ndarray) -> None:
    profile = _srgb_profile()
    _frames_file(tmp_path / "in.png", rgb_photo, 2, icc_profile=profile, exif=_camera_exif(1))
    image = read_image(tmp_path / "in.png", all_frames=True)
    assert image.icc_profile == profile and image.exif is not None
    write_image(tmp_path / f"out{target}", image)
    again = read_image(tmp_path / f"out{target}", all_frames=True)
    assert len(again.frames) == 2 and again.icc_profile == profile
    assert _exif_of(tmp_path / f"out{target}")[0x010F] == "Example Camera"


def test_animation_with_alpha_and_16bit_pages(
    tmp_path: Path, rgba_photo: np.ndarray, rgb16_photo: np.ndarray
) -> None:
    frames = [np.roll(rgba_photo, 4 * k, axis=0) for k in range(3)]
    image = Image(
        pixels=frames[0], format="WEBP", later_frames=tuple(frames[1:]), durations=(50, 50, 50), loop=0
    )
    write_image(tmp_path / "a.webp", image)
    again = read_image(tmp_path / "a.webp", all_frames=True)
    for got, made in zip(again.frames, frames, strict=True):
        np.testing.assert_array_equal(got[:, :, 3], made[:, :, 3])
        seen = made[:, :, 3] > 0  # the WebP animation encoder zeroes the colour of transparent pixels
        np.testing.assert_array_equal(got[seen], made[seen])
    # 16-bit gray pages stay 16-bit in TIFF; APNG frames are 8-bit.
    pages = [rgb16_photo[:, :, k] for k in range(3)]
    write_image(tmp_path / "p.tif", Image(pixels=pages[0], format="TIFF", later_frames=tuple(pages[1:])))
    again = read_image(tmp_path / "p.tif", all_frames=True)
    assert again.bit_depth == 16
    for got, made in zip(again.frames, pages, strict=True):
        np.testing.assert_array_equal(got[:, :, 0], made)
    write_image(tmp_path / "p.png", Image(pixels=pages[0], format="TIFF", later_frames=tuple(pages[1:])))
    again = read_image(tmp_path / "p.png", all_frames=True)
    assert again.bit_depth == 8 and len(again.frames) == 3
    np.testing.assert_array_equal(again.frames[2][:, :, 0], np.round(pages[2] / 257).astype(np.uint8))


def test_pages_of_mixed_layout_and_of_different_sizes(
    tmp_path: Path, rgb_photo: np.ndarray, gray_photo: np.ndarray
) -> None:
    gray, colour = PILImage.fromarray(gray_photo), PILImage.fromarray(rgb_photo)
    gray.save(tmp_path / "mixed.tif", save_all=True, append_images=[colour])
    image = read_image(tmp_path / "mixed.tif", all_frames=True)
    assert image.mode == "RGB"  # the gray page is brought to the layout of the colour one
    np.testing.assert_array_equal(image.pixels, np.dstack([gray_photo] * 3))
    np.testing.assert_array_equal(image.later_frames[0], rgb_photo)
    colour.save(tmp_path / "sizes.tif", save_all=True, append_images=[colour.crop((0, 0, 20, 10))])
    with pytest.raises(SisrError, match=r"sizes\.tif: its pages differ in size \(48x40 and 20x10\)"):
        read_image(tmp_path / "sizes.tif", all_frames=True)


def test_frames_count_towards_the_pixel_limit(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    _frames_file(tmp_path / "a.gif", rgb_photo, 3)
    with pytest.raises(
        SisrError, match=r"a\.gif: 3 frames of 48x40 = 5760 pixels, more than the limit of 5000"
    ):
        read_image(tmp_path / "a.gif", all_frames=True, max_pixels=5000)


def test_single_frame_gif(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    pal = PILImage.fromarray(rgb_photo).quantize(colors=32)
    pal.save(tmp_path / "still.gif", transparency=5)
    image = read_image(tmp_path / "still.gif")
    assert (image.format, image.mode) == ("GIF", "RGBA")
    np.testing.assert_array_equal(image.pixels[:, :, 3], np.where(np.asarray(pal) == 5, 0, 255))
    np.testing.assert_array_equal(image.pixels[:, :, :3], np.asarray(pal.convert("RGB")))
    write_image(tmp_path / "out.gif", image)
    again = read_image(tmp_path / "out.gif")
    np.testing.assert_array_equal(again.pixels[:, :, 3], image.pixels[:, :, 3])
    opaque = image.pixels[:, :, 3] == 255
    error = np.abs(again.pixels[opaque].astype(int) - image.pixels[opaque])
    assert error.max() <= 16  # Pillow quantises RGBA for GIF afresh


def test_frames_to_a_format_of_one_frame(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    with pytest.raises(
        SisrError, match=r"out\.jpg: JPEG cannot store 3 frames; use \.webp, \.png, \.gif or \.tif"
    ):
        imageio.check_writable(tmp_path / "out.jpg", channels=3, frames=3)
    image = Image(pixels=rgb_photo, format="GIF", later_frames=(rgb_photo,))
    with pytest.raises(SisrError, match=r"out\.bmp: BMP cannot store 2 frames"):
        write_image(tmp_path / "out.bmp", image)
    with pytest.raises(ValueError, match="all frames"):
        write_image(tmp_path / "out.png", dataclasses.replace(image, later_frames=(rgb_photo[1:],)))
    with pytest.raises(ValueError, match="3 durations for 2 frames"):
        write_image(tmp_path / "out.png", dataclasses.replace(image, durations=(1, 2, 3)))
    assert list(tmp_path.iterdir()) == []


def test_mpo_reads_its_main_image(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    # Phone cameras' JPEGs are often MPO files whose second image is a preview, not an animation frame.
    main, preview = PILImage.fromarray(rgb_photo), PILImage.fromarray(rgb_photo[::-1])
    main.save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[preview], quality=95)
    image = read_image(tmp_path / "phone.jpg")
    assert image.format == "MPO"
    with PILImage.open(tmp_path / "phone.jpg") as im:
        np.testing.assert_array_equal(image.pixels, np.asarray(im))


# ----------------------------------------------------------------------------------------------------
# Colour profile and EXIF


@functools.cache  # made once: its header holds the creation time, so two calls a second apart differ
def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _gray_profile() -> bytes:
    # The sRGB profile relabelled as gray: only the header's colour space matters to sisr.
    profile = _srgb_profile()
    return profile[:16] + b"GRAY" + profile[20:]


def _camera_exif(orientation: int) -> PILImage.Exif:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Example Camera"  # Make
    exif[0x0131] = "sisr test"  # Software
    return exif


def _exif_of(path: Path) -> dict[int, object]:
    with PILImage.open(path) as im:
        return dict(im.getexif())


@pytest.mark.parametrize("source", [".png", ".jpg", ".webp", ".tif", "png16"])
@pytest.mark.parametrize("target", [".png", ".jpg", ".webp", ".tif", "png16"])
def test_icc_profile_is_kept(
    tmp_path: Path, source: str, target: str, rgb_photo: np.ndarray, rgb16_photo: np.ndarray
) -> None:
    profile = _srgb_profile()
    src = tmp_path / f"in{source.replace('png16', '.png')}"
    if source == "png16":
        write_image(src, Image(pixels=rgb16_photo, format="PNG", icc_profile=profile))
    else:
        PILImage.fromarray(rgb_photo).save(src, icc_profile=profile)
    image = read_image(src)
    assert image.icc_profile == profile
    out = tmp_path / f"out{target.replace('png16', '.png')}"
    pixels = image.pixels if target != "png16" else image.pixels.astype(np.uint16) * 257
    write_image(out, dataclasses.replace(image, pixels=pixels))
    assert read_image(out).icc_profile == profile
    with PILImage.open(out) as im:  # an independent reader finds it too
        assert im.info.get("icc_profile") == profile


def test_icc_profile_of_another_colour_space_is_not_kept(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    cmyk_profile = _srgb_profile()[:16] + b"CMYK" + _srgb_profile()[20:]
    PILImage.fromarray(rgb_photo).convert("CMYK").save(tmp_path / "print.jpg", icc_profile=cmyk_profile)
    image = read_image(tmp_path / "print.jpg")
    assert image.mode == "RGB" and image.icc_profile is None  # the CMYK profile no longer applies
    PILImage.fromarray(rgb_photo[:, :, 0]).save(tmp_path / "g.png", icc_profile=_gray_profile())
    image = read_image(tmp_path / "g.png")
    assert image.icc_profile == _gray_profile()
    write_image(tmp_path / "g.webp", image)  # WebP stores RGB
    with PILImage.open(tmp_path / "g.webp") as im:
        assert "icc_profile" not in im.info
    write_image(tmp_path / "g.tif", image)
    assert read_image(tmp_path / "g.tif").icc_profile == _gray_profile()


@pytest.mark.parametrize("source", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("target", [".jpg", ".png", ".webp", "png16"])
def test_exif_is_kept_with_orientation_reset(
    tmp_path: Path, source: str, target: str, rgb_photo: np.ndarray
) -> None:
    src = tmp_path / f"in{source}"
    PILImage.fromarray(rgb_photo).save(
        src, exif=_camera_exif(6), **({"lossless": True} if source == ".webp" else {})
    )
    image = read_image(src)
    assert image.pixels.shape[:2] == (48, 40)  # turned upright
    assert image.exif is not None and image.exif.startswith(b"Exif\x00\x00")
    out = tmp_path / f"out{target.replace('png16', '.png')}"
    pixels = image.pixels if target != "png16" else image.pixels.astype(np.uint16) * 257
    write_image(out, dataclasses.replace(image, pixels=pixels))
    tags = _exif_of(out)
    assert tags[0x0112] == 1 and tags[0x010F] == "Example Camera" and tags[0x0131] == "sisr test"
    again = read_image(out)  # read again, the upright pixels stay upright
    assert again.pixels.shape[:2] == (48, 40)
    if target in (".png", ".webp"):
        np.testing.assert_array_equal(again.pixels, image.pixels)


def test_exif_without_orientation_is_kept_byte_for_byte(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    exif = _camera_exif(1)
    del exif[0x0112]
    PILImage.fromarray(rgb_photo).save(tmp_path / "a.jpg", exif=exif)
    with PILImage.open(tmp_path / "a.jpg") as im:
        raw = im.info["exif"]
    assert read_image(tmp_path / "a.jpg").exif == raw


def test_corrupt_exif_warns_in_one_clean_line(
    tmp_path: Path, rgb_photo: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    buf = io.BytesIO()
    PILImage.fromarray(rgb_photo).save(buf, format="JPEG", exif=_camera_exif(6))
    data = bytearray(buf.getvalue())
    at = data.find(b"Exif\x00\x00") + 6 + 8  # the entry count of IFD0
    data[at : at + 2] = b"\xff\xff"  # far more entries than the block holds
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning escapes to Python's machinery
        image = read_image(tmp_path / "bad.jpg")
    assert image.pixels.shape in ((40, 48, 3), (48, 40, 3))  # turned if the orientation was still found
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"sisr: warning: {tmp_path / 'bad.jpg'}: Corrupt EXIF data")


# ----------------------------------------------------------------------------------------------------
# TIFFs Pillow cannot open


def _tiff_with_tag(pixels: np.ndarray, tag: int, value: int) -> bytes:
    """A Pillow-written little-endian TIFF with one SHORT tag of its first directory changed."""
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if struct.unpack("<H", data[entry : entry + 2])[0] == tag:
            data[entry + 8 : entry + 10] = struct.pack("<H", value)
            return bytes(data)
    raise AssertionError(f"no tag {tag}")


def test_tiff_pillow_cannot_open_says_why(
    tmp_path: Path, rgb_photo: np.ndarray, rgb16_photo: np.ndarray
) -> None:
    (tmp_path / "j2k.tif").write_bytes(_tiff_with_tag(rgb_photo, 259, 34712))
    with pytest.raises(
        SisrError, match=r"j2k\.tif: cannot decode TIFF image: compression 34712 \(JPEG 2000\)"
    ):
        read_image(tmp_path / "j2k.tif")
    (tmp_path / "odd.tif").write_bytes(_tiff_with_tag(rgb_photo, 259, 65000))
    with pytest.raises(
        SisrError, match=r"odd\.tif: cannot decode TIFF image: compression 65000 is not supported"
    ):
        read_image(tmp_path / "odd.tif")
    (tmp_path / "24bit.tif").write_bytes(_tiff_with_tag(rgb16_photo[:, :, 0], 258, 24))
    with pytest.raises(
        SisrError, match=r"24bit\.tif: cannot decode TIFF image: 1 sample\(s\) per pixel of 24-bit"
    ):
        read_image(tmp_path / "24bit.tif")


def test_other_formats_are_named(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x00\x00\x00\x1cftypheic" + bytes(40))
    with pytest.raises(
        SisrError, match=r"photo\.png: is a HEIC file, not a PNG, JPEG, WebP, BMP, TIFF or GIF image"
    ):
        read_image(tmp_path / "photo.png")
    (tmp_path / "scan.tif").write_bytes(b"%PDF-1.4\n" + bytes(40))
    with pytest.raises(SisrError, match=r"scan\.tif: is a PDF file"):
        read_image(tmp_path / "scan.tif")


# ----------------------------------------------------------------------------------------------------
# Checking the output before the work


def test_check_writable_accepts_and_leaves_nothing(tmp_path: Path) -> None:
    assert imageio.check_writable(tmp_path / "out.png", channels=4) == "PNG"
    assert imageio.check_writable(tmp_path / "new" / "deeper" / "out.jpg", channels=3) == "JPEG"
    assert list(tmp_path.iterdir()) == []  # no probe left, no folder made


def test_check_writable_refusals(tmp_path: Path) -> None:
    with pytest.raises(SisrError, match=r"out\.jpg: JPEG cannot store the alpha channel"):
        imageio.check_writable(tmp_path / "out.jpg", channels=4)
    with pytest.raises(SisrError, match=r"out\.bmp: BMP cannot store the alpha channel"):
        imageio.check_writable(tmp_path / "out.bmp", channels=2)
    with pytest.raises(SisrError, match=r"out\.pcx: cannot choose an image format"):
        imageio.check_writable(tmp_path / "out.pcx", channels=3)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(SisrError, match=r"dir\.png: cannot write: is a directory"):
        imageio.check_writable(tmp_path / "dir.png", channels=3)
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    with pytest.raises(SisrError, match=r"out\.png: cannot write: .*notes\.txt is not a folder"):
        imageio.check_writable(tmp_path / "notes.txt" / "sub" / "out.png", channels=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(SisrError, match=r"out\.png: cannot write into .*ro: .*ermission denied"):
            imageio.check_writable(folder / "out.png", channels=3)
        with pytest.raises(SisrError, match=r"out\.png: cannot write a folder under .*ro: "):
            imageio.check_writable(folder / "sub" / "out.png", channels=3)
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_check_writable_read_only_for_root_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a read-only mount does to root as to anyone: creating the probe fails.
    def read_only(path: object, *, folder: object = None) -> str:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(imageio, "new_temporary", read_only)
    with pytest.raises(
        SisrError, match=r"out\.png: cannot write into .*: \[Errno 30\] Read-only file system"
    ):
        imageio.check_writable(tmp_path / "out.png", channels=3)


# ----------------------------------------------------------------------------------------------------
# Temporary files (sisr.atomic)


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(child.stdout)


def test_temporary_files_name_their_process(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    seen = []

    def write(tmp: str) -> None:
        seen.append(Path(tmp).name)
        Path(tmp).write_bytes(b"x")

    atomic_write(tmp_path / "net_g_1000.pth", write)
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]
    assert re.fullmatch(rf"\.net_g_1000\.pth\.sisr-{host}-{os.getpid()}-\w+\.tmp", seen[0])
    assert TEMPORARY_PATTERN.match(seen[0])
    assert [p.name for p in tmp_path.iterdir()] == ["net_g_1000.pth"]


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path: Path, rgb_photo: np.ndarray) -> None:
    dead, host = _dead_pid(), re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]
    stale = [f".net_g_1000.pth.sisr-{host}-{dead}-a1b2c3.tmp", f".out.png.sisr-{host}-{dead}-zz_9.tmp"]
    live = [f".net_g_2000.pth.sisr-{host}-{os.getppid()}-q.tmp", f".x.png.sisr-{host}-{os.getpid()}-q.tmp"]
    live.append(f".y.png.sisr-otherhost-{dead}-q.tmp")  # another machine's: not ours to judge
    others = [".net_g_1000.pth.abc.tmp", "notes.sisr-1-x.tmp", "keep.png"]  # not ours: left alone
    for name in stale + live + others:
        (tmp_path / name).write_bytes(b"")
    write_image(tmp_path / "new.png", rgb_photo)  # another name: stale files of any name go
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*live, *others, "new.png"])


@pytest.mark.slow
def test_sigkill_leaves_a_temporary_file_that_the_next_write_removes(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from sisr.atomic import atomic_write\n"
        "def write(tmp):\n"
        "    Path(tmp).write_bytes(b'half')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(60)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(imageio.__file__).parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "net_g_5.pth")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        tmp = Path(child.stdout.readline().strip())  # type: ignore[union-attr]
        assert tmp.parent == tmp_path and tmp.exists()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    assert [p.name for p in tmp_path.iterdir()] == [tmp.name]  # what SIGKILL leaves
    atomic_write(tmp_path / "net_g_10.pth", lambda t: Path(t).write_bytes(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["net_g_10.pth"]


# ----------------------------------------------------------------------------------------------------
# Fuzzing the reader


def _fuzz_seeds() -> dict[str, bytes]:
    """Small real files of every kind the reader takes, from scikit-image's photographs."""
    from PIL import ImageCms
    from skimage import data

    rgb = np.ascontiguousarray(data.astronaut()[100:116, 180:200])
    gray = np.ascontiguousarray(data.camera()[90:106, 200:220])
    rgb16 = rgb.astype(np.uint16) * 257 + 3
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = PILImage.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Example Camera"
    seeds = {}

    def pillow(key: str, im: PILImage.Image, format: str, **options: object) -> None:
        buf = io.BytesIO()
        im.save(buf, format=format, **options)
        seeds[key] = buf.getvalue()

    pillow("png", PILImage.fromarray(rgb), "PNG", icc_profile=profile, exif=exif)
    pillow("png-la", PILImage.fromarray(np.dstack([gray, gray[::-1]]), mode="LA"), "PNG")
    pillow("png-palette", PILImage.fromarray(rgb).quantize(colors=8), "PNG", transparency=2)
    pillow("png-interlaced", PILImage.fromarray(gray), "PNG", interlace=1)
    pillow("jpeg", PILImage.fromarray(rgb), "JPEG", quality=90, exif=exif, icc_profile=profile)
    pillow("jpeg-progressive", PILImage.fromarray(gray), "JPEG", progressive=True)
    pillow("webp", PILImage.fromarray(rgb), "WEBP", lossless=True, exif=exif)
    pillow("webp-lossy", PILImage.fromarray(np.dstack([rgb, gray])), "WEBP", quality=80)
    pillow("bmp", PILImage.fromarray(rgb), "BMP")
    pillow("tiff", PILImage.fromarray(rgb), "TIFF", compression="tiff_lzw")
    pillow("tiff-raw16", PILImage.fromarray(rgb16[:, :, 0]), "TIFF")
    pillow("gif", PILImage.fromarray(rgb).quantize(colors=16), "GIF", transparency=3)
    later = [PILImage.fromarray(np.roll(rgb, 3, axis=1)), PILImage.fromarray(gray).convert("RGB")]
    for format, options in (("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {}), ("TIFF", {})):
        timing = {"duration": [30, 60, 90], "loop": 0} if format != "TIFF" else {}
        pillow(
            f"anim-{format.lower()}",
            PILImage.fromarray(rgb),
            format,
            save_all=True,
            append_images=later,
            **timing,
            **options,
        )
    buf = io.BytesIO()
    imageio._write_png16(
        buf, rgb16, imageio._Metadata(icc_profile=profile, exif=b"Exif\x00\x00" + exif.tobytes())
    )
    seeds["png16"] = buf.getvalue()
    return seeds


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = rng.integers(5)
    if kind == 0:  # bit flips
        for at in rng.integers(0, len(out), rng.integers(1, 9)):
            out[at] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncation
        del out[rng.integers(1, len(out)) :]
    elif kind == 2:  # inserted bytes
        at = int(rng.integers(len(out)))
        out[at:at] = rng.integers(0, 256, rng.integers(1, 64)).astype(np.uint8).tobytes()
    elif kind == 3:  # deleted bytes
        at = int(rng.integers(len(out)))
        del out[at : at + int(rng.integers(1, 64))]
    else:  # a header field (sizes, depths, offsets, counts) set to an extreme or random value
        at = int(rng.integers(0, min(len(out) - 4, 64)))
        value = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x01\x00"]
        out[at : at + 4] = value[rng.integers(4)] if rng.random() < 0.7 else rng.bytes(4)
    return bytes(out)


def test_fuzzed_files_fail_with_one_line_or_decode(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(13)
    seeds = _fuzz_seeds()
    outcomes = {"decoded": 0, "refused": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped the reader would fail the case
        for key, seed in seeds.items():
            animated = key.startswith("anim-")
            assert len(decode_image(seed, key, all_frames=animated).frames) == (3 if animated else 1)
            for case in range(20):
                name = f"{key}-{case}"
                mutated = _mutate(seed, rng)
                try:
                    image = decode_image(mutated, name, max_pixels=1_000_000, all_frames=animated)
                except SisrError as e:
                    message = str(e)
                    assert "\n" not in message and message.startswith(f"{name}: "), (name, message)
                    outcomes["refused"] += 1
                else:
                    pixels = image.pixels
                    assert pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4), name
                    assert pixels.dtype in (np.uint8, np.uint16), name
                    assert all(f.shape == pixels.shape and f.dtype == pixels.dtype for f in image.frames)
                    outcomes["decoded"] += 1
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith("sisr: warning: "), line
    assert sum(outcomes.values()) == 20 * len(seeds)
    assert min(outcomes.values()) > 30  # both outcomes are exercised
