"""Whole-image and tiled inference: pixel conversions, exactness of tiling, seams, argument checks."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from torch import Tensor, nn

from sisr.checkpoint import load_model
from sisr.data.images import read_image, write_image
from sisr.errors import SisrError
from sisr.inference import _blend_weights, tile_starts, upscale, upscale_tensor
from sisr.models import create_model


class Nearest(nn.Module):
    """Nearest-neighbour upsampling with per-channel gains: a pointwise 'network' with known output."""

    def __init__(self, scale: int, gains: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.scale = scale
        self.gains = nn.Parameter(torch.tensor(gains).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") * self.gains


class TinySR(nn.Module):
    """Three 3x3 convolutions and a pixel shuffle on top of a nearest-neighbour skip.

    Its receptive field reaches 3 input pixels in every direction, and its zero padding spoils outputs
    within 3 pixels of the border of whatever it is given, as in a real network.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        skip = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        return skip + self.shuffle(self.conv3(h))


def tiny_sr(scale: int) -> TinySR:
    torch.manual_seed(0)
    return TinySR(scale).eval()


def as_batch(image: np.ndarray) -> Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255)[None]


def repeat(image: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


# ----------------------------------------------------------------------------------------------------
# Conversions of numpy images


@pytest.mark.parametrize("tile", [None, 16])
@pytest.mark.parametrize("scale", [2, 3])
def test_pixels_survive_exactly(
    scale: int,
    tile: int | None,
    rgb_photo: np.ndarray,
    gray_photo: np.ndarray,
    rgba_photo: np.ndarray,
    rgb16_photo: np.ndarray,
) -> None:
    # A pointwise network must give back exactly the repeated pixels, for every layout and depth, tiled
    # or not: conversions to float and back lose nothing, tile weights add up to one.
    model = Nearest(scale)
    for image in (
        rgb_photo,
        gray_photo,
        gray_photo[:, :, None],
        rgba_photo,
        rgb16_photo,
        rgb16_photo[:, :, 0],
    ):
        out = upscale(model, image, tile=tile, overlap=5)
        assert out.dtype == image.dtype
        np.testing.assert_array_equal(out, repeat(image, scale))


def test_gray_is_the_channel_mean() -> None:
    model = Nearest(2, gains=(0.2, 0.5, 0.5))  # a gray input comes out as 0.4 of itself
    image = np.array([[0, 50], [100, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(upscale(model, image), repeat(np.round(image * 0.4).astype(np.uint8), 2))


def test_output_is_clamped_and_rounded() -> None:
    model = Nearest(1, gains=(2.0, 0.5, 1.0))
    image = np.array([[[200, 3, 7]]], dtype=np.uint8)  # 400 -> 255, 1.5 -> 2 (half to even), 7
    assert upscale(model, image).tolist() == [[[255, 2, 7]]]


def test_alpha_goes_through_the_network(rgba_photo: np.ndarray) -> None:
    model = tiny_sr(2)
    out = upscale(model, rgba_photo)
    assert out.shape == (80, 96, 4)
    np.testing.assert_array_equal(out[:, :, :3], upscale(model, rgba_photo[:, :, :3]))
    # Alpha takes the same path as a gray image (batched with the colour, so allow one level).
    assert np.abs(out[:, :, 3].astype(int) - upscale(model, rgba_photo[:, :, 3])).max() <= 1
    # and is not a plain nearest-neighbour copy: the network sharpened or smoothed the mask edge.
    assert not np.array_equal(out[:, :, 3], repeat(rgba_photo[:, :, 3], 2))


def test_constant_alpha_is_kept(rgb_photo: np.ndarray) -> None:
    rgba = np.dstack([rgb_photo, np.full(rgb_photo.shape[:2], 255, np.uint8)])
    out = upscale(tiny_sr(2), rgba)
    assert (out[:, :, 3] == 255).all()
    np.testing.assert_array_equal(out[:, :, :3], upscale(tiny_sr(2), rgb_photo))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_with_alpha_stays_gray_with_alpha(dtype: type, rgba_photo: np.ndarray) -> None:
    scale = 1 if dtype == np.uint8 else 257
    la = (np.dstack([rgba_photo[:, :, 0], rgba_photo[:, :, 3]]).astype(np.uint32) * scale).astype(dtype)
    model = tiny_sr(2)
    out = upscale(model, la)
    assert out.shape == (80, 96, 2) and out.dtype == dtype
    # The gray goes through the network as a gray image does, and the alpha as RGBA's alpha does
    # (batched together, so allow one level).
    assert np.abs(out[:, :, 0].astype(int) - upscale(model, la[:, :, 0])).max() <= 1
    rgba = np.dstack([np.repeat(la[:, :, :1], 3, axis=2), la[:, :, 1]])
    assert np.abs(out[:, :, 1].astype(int) - upscale(model, rgba)[:, :, 3]).max() <= 1
    assert not np.array_equal(out[:, :, 1], repeat(la[:, :, 1], 2))  # not a plain copy
    opaque = la.copy()
    opaque[:, :, 1] = np.iinfo(dtype).max
    out = upscale(model, opaque)
    assert (out[:, :, 1] == np.iinfo(dtype).max).all()
    np.testing.assert_array_equal(out[:, :, 0], upscale(model, la[:, :, 0]))


def test_bad_images_are_rejected(rgb_photo: np.ndarray) -> None:
    with pytest.raises(TypeError):
        upscale(Nearest(2), rgb_photo.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        upscale(Nearest(2), np.dstack([rgb_photo, rgb_photo[:, :, :2]]))  # 5 channels


# ----------------------------------------------------------------------------------------------------
# Tiling


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(10, 4, 1), (10, 4, 2), (9, 9, 3), (5, 8, 2), (33, 16, 0)]
)
def test_tile_starts_cover_and_end_at_the_border(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    assert all(b > a for a, b in itertools.pairwise(starts))


def test_blend_weights_sum_to_one_everywhere() -> None:
    for length in (1, 7, 16, 23, 37):
        for tile in range(1, 17):
            for overlap in range(tile):
                for scale in (1, 3):
                    starts = tile_starts(length, tile, overlap)
                    size = min(tile, length)
                    weights = _blend_weights(starts, size, overlap, length, scale)
                    assert (weights >= 0).all()
                    total = torch.zeros(scale * length, dtype=torch.float64)
                    for w, start in zip(weights, starts, strict=True):
                        total[scale * start : scale * (start + size)] += w
                    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


@pytest.mark.parametrize("tile", [40, 48, 100])
def test_one_tile_is_bit_identical(tile: int, rgb_photo: np.ndarray) -> None:
    model = tiny_sr(2)
    x = as_batch(rgb_photo)  # 40 x 48
    if tile >= 48:
        assert torch.equal(upscale_tensor(model, x, tile=tile), upscale_tensor(model, x))
        np.testing.assert_array_equal(upscale(model, rgb_photo, tile=tile), upscale(model, rgb_photo))
    else:  # a tile that covers the height only splits the width
        assert not torch.equal(upscale_tensor(model, x, tile=tile, overlap=8), upscale_tensor(model, x))


def test_tiles_are_exact_when_the_margin_covers_the_receptive_field(rgb_photo: np.ndarray) -> None:
    # The outer quarter of a 16-pixel overlap (4 pixels) covers TinySR's reach of 3 pixels, so every
    # output pixel comes from tiles that saw all of its context: tiling changes nothing but rounding.
    model = tiny_sr(2)
    x = as_batch(rgb_photo)
    whole = upscale_tensor(model, x)
    tiled = upscale_tensor(model, x, tile=20, overlap=16)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=2e-6)


def seam_profile(tiled: Tensor, whole: Tensor) -> tuple[float, float]:
    """Max error and max jump of the error between neighbouring pixels (a seam is a jump)."""
    error = (tiled - whole)[0]
    jump = max(
        (error[:, 1:] - error[:, :-1]).abs().max().item(),
        (error[:, :, 1:] - error[:, :, :-1]).abs().max().item(),
    )
    return error.abs().max().item(), jump


def test_small_overlap_leaves_no_seam(rgb_photo: np.ndarray) -> None:
    model = tiny_sr(2)
    x = as_batch(rgb_photo)
    whole = upscale_tensor(model, x)
    _, hard_jump = seam_profile(upscale_tensor(model, x, tile=16, overlap=0), whole)
    error, jump = seam_profile(upscale_tensor(model, x, tile=16, overlap=8), whole)
    assert hard_jump > 0.05  # cutting tiles without overlap shows
    assert jump < hard_jump / 10
    assert error < 0.01


def test_real_network_tiles_without_seams() -> None:
    # SeemoRe sees far (large kernels, recursion), so no margin covers its reach: tiles differ from the
    # whole image a little everywhere. The cross-fade must keep that below visibility and without jumps.
    torch.manual_seed(0)
    model = create_model("seemore-t", 2).eval()
    x = as_batch(np.ascontiguousarray(data.astronaut()[100:140, 180:220]))  # 40 x 40
    whole = upscale_tensor(model, x)
    error, jump = seam_profile(upscale_tensor(model, x, tile=24, overlap=16), whole)  # 2 x 2 tiles
    _, hard_jump = seam_profile(upscale_tensor(model, x, tile=20, overlap=0), whole)
    assert error < 2 / 255  # less than two levels of an 8-bit image anywhere
    assert jump < hard_jump / 100


def test_every_tile_is_at_most_tile_sized(rgb_photo: np.ndarray) -> None:
    seen: list[tuple[int, int]] = []

    class Recorder(Nearest):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    out = upscale(Recorder(2), rgb_photo, tile=16, overlap=4)  # 40 x 48: 3 rows x 4 columns
    assert out.shape == (80, 96, 3)
    assert len(seen) == len(tile_starts(40, 16, 4)) * len(tile_starts(48, 16, 4)) == 12
    assert set(seen) == {(16, 16)}


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 2), (3, 3)])
def test_tiny_images(shape: tuple[int, int]) -> None:
    image = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape) * 7
    np.testing.assert_array_equal(upscale(Nearest(2), image, tile=2, overlap=1), repeat(image, 2))
    assert upscale(tiny_sr(3), image, tile=2, overlap=1).shape == (3 * shape[0], 3 * shape[1])


def test_images_below_the_model_minimum_are_padded() -> None:
    model = Nearest(2)
    model.min_size = 4  # as SeemoRe's 16: the network refuses smaller inputs
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    image = (np.arange(7, dtype=np.uint8) * 30)[None]  # 1 x 7
    np.testing.assert_array_equal(upscale(model, image), repeat(image, 2))
    np.testing.assert_array_equal(upscale(model, image, tile=4, overlap=1), repeat(image, 2))
    assert min(min(shape) for shape in seen) >= 4
    with pytest.raises(SisrError, match="tile size must be at least 4 for this model, got 3"):
        upscale(model, image, tile=3, overlap=1)


@pytest.mark.parametrize(
    ("tile", "overlap", "message"), [(0, 0, "at least 1"), (8, 8, "smaller"), (8, -1, "at least 0")]
)
def test_bad_tiling_arguments(tile: int, overlap: int, message: str, rgb_photo: np.ndarray) -> None:
    with pytest.raises(SisrError, match=message):
        upscale(Nearest(2), rgb_photo, tile=tile, overlap=overlap)


# ----------------------------------------------------------------------------------------------------
# Through `sisr upscale`: what the pixels carry reaches the output, and outputs are checked first

SHIPPED = ["-m", "seemore-t", "-s", "2"]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    from sisr.cli import main

    status = main(["upscale", *argv])
    return status, capsys.readouterr().err.splitlines()


def test_cli_keeps_icc_profile_and_exif(
    tmp_path: Path, rgb_photo: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image as PILImage
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # shown turned clockwise
    exif[0x010F] = "Example Camera"
    source = tmp_path / "phone.jpg"
    PILImage.fromarray(rgb_photo[:20, :24]).save(source, icc_profile=profile, exif=exif, quality=95)
    for out in (tmp_path / "up.jpg", tmp_path / "up.png"):
        status, err = _cli([str(source), "-o", str(out), *SHIPPED], capsys)
        assert (status, err) == (0, [])
        image = read_image(out)
        assert image.pixels.shape == (48, 40, 3)  # upright, then upscaled
        assert image.icc_profile == profile
        with PILImage.open(out) as im:
            tags = im.getexif()
            assert (tags[0x0112], tags[0x010F]) == (1, "Example Camera")
            assert im.info["icc_profile"] == profile


@pytest.mark.parametrize("bits", [8, 16])
def test_cli_gray_with_alpha_stays_gray_with_alpha(
    tmp_path: Path, bits: int, rgba_photo: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    la = np.dstack([rgba_photo[:20, :24, 0], rgba_photo[10:30, 12:36, 3]])
    if bits == 16:
        la = la.astype(np.uint16) * 257
    write_image(tmp_path / "la.png", la)
    status, err = _cli([str(tmp_path / "la.png"), "-o", str(tmp_path / "up.png"), *SHIPPED], capsys)
    assert (status, err) == (0, [])
    image = read_image(tmp_path / "up.png")
    assert (image.mode, image.bit_depth, image.pixels.shape) == ("LA", bits, (40, 48, 2))


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from sisr.models.seemore import SeemoRe

    def forward(self: nn.Module, x: Tensor) -> Tensor:
        pytest.fail("the network ran before the output was checked")

    monkeypatch.setattr(SeemoRe, "forward", forward)


def test_cli_refuses_alpha_to_jpeg_before_the_network_runs(
    tmp_path: Path,
    rgba_photo: np.ndarray,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_network(monkeypatch)
    write_image(tmp_path / "cat.png", rgba_photo)
    status, err = _cli([str(tmp_path / "cat.png"), "-o", str(tmp_path / "cat.jpg"), *SHIPPED], capsys)
    assert status == 1
    assert err == [
        f"sisr: error: {tmp_path / 'cat.jpg'}: JPEG cannot store the alpha channel; use .png, .webp or .tif"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]


def test_cli_refuses_an_unwritable_folder_before_the_network_runs(
    tmp_path: Path, rgb_photo: np.ndarray, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_network(monkeypatch)
    write_image(tmp_path / "a.png", rgb_photo)
    (tmp_path / "file").write_text("not a folder\n")
    target = tmp_path / "file" / "out" / "a.png"
    status, err = _cli([str(tmp_path / "a.png"), "-o", str(target), *SHIPPED], capsys)
    assert status == 1
    assert err == [f"sisr: error: {target}: cannot write: {tmp_path / 'file'} is not a folder"]
    if os.geteuid() != 0:  # root writes into read-only folders: only the case above applies to it
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            status, err = _cli([str(tmp_path / "a.png"), "-o", str(folder / "a.png"), *SHIPPED], capsys)
        finally:
            folder.chmod(0o755)
        assert status == 1 and len(err) == 1 and "cannot write into" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) in (["a.png", "file"], ["a.png", "file", "ro"])


@pytest.mark.parametrize("ext", [".webp", ".gif"])
def test_cli_upscales_every_frame_and_keeps_the_timing(
    tmp_path: Path, ext: str, rgb_photo: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image as PILImage

    frames = [
        PILImage.fromarray(np.roll(rgb_photo[:20, :24], 6 * k, axis=1)).quantize(64).convert("RGB")
        for k in range(2)
    ]
    lossless = {"lossless": True} if ext == ".webp" else {}
    source = tmp_path / f"anim{ext}"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[40, 90], loop=2, **lossless)
    status, err = _cli([str(source), *SHIPPED], capsys)  # NAME_x2.EXT beside it
    assert (status, err) == (0, [])
    result = read_image(tmp_path / f"anim_x2{ext}", all_frames=True)
    assert len(result.frames) == 2 and result.pixels.shape[:2] == (40, 48)
    assert (result.durations, result.loop) == ((40, 90), 2)
    model = load_model("seemore-t-x2")
    for got, frame in zip(result.frames, frames, strict=True):  # each frame is the upscaled frame
        expected = upscale(model, np.asarray(frame))
        tolerance = 40 if ext == ".gif" else 0  # GIF quantises the result to 256 colours
        assert np.abs(got[:, :, :3].astype(int) - expected).mean() <= tolerance / 4
        assert np.abs(got[:, :, :3].astype(int) - expected).max() <= max(tolerance, 0)


def test_cli_refuses_frames_to_jpeg_before_the_network_runs(
    tmp_path: Path, rgb_photo: np.ndarray, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image as PILImage

    _no_network(monkeypatch)
    frames = [PILImage.fromarray(rgb_photo), PILImage.fromarray(rgb_photo[::-1])]
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], lossless=True)
    status, err = _cli([str(tmp_path / "a.webp"), "-o", str(tmp_path / "a.jpg"), *SHIPPED], capsys)
    assert status == 1
    assert err == [
        f"sisr: error: {tmp_path / 'a.jpg'}: JPEG cannot store 2 frames; use .webp, .png, .gif or .tif"
    ]
