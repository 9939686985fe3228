"""MATLAB bicubic imresize: agreement with BasicSR's ``matlab_functions.imresize`` and its properties.

Reference outputs in ``fixtures/basicsr_reference.npz`` (see ``fixtures/README.md``, "BasicSR reference
values"): full outputs for tiny crops, mean/std and a fixed sample of pixels for larger ones, and the
per-axis weight matrices BasicSR builds, computed in float64.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from sisr.errors import SisrError
from sisr.heldout import lr_of
from sisr.imresize import bicubic_lr, imresize, imresize_torch, resize_matrix
from sisr.metrics import modcrop

FIXTURE = Path(__file__).parent / "fixtures" / "basicsr_reference.npz"

# name -> (loader, rows, cols)
SOURCES = {
    "astronaut_24x30": (data.astronaut, slice(200, 224), slice(250, 280)),
    "chelsea_10x12": (data.chelsea, slice(100, 110), slice(200, 212)),
    "camera_24x30": (data.camera, slice(100, 124), slice(100, 130)),
    "coffee_110x131": (data.coffee, slice(120, 230), slice(200, 331)),
    "astronaut_123x157": (data.astronaut, slice(30, 153), slice(170, 327)),
    "chelsea_40x50": (data.chelsea, slice(120, 160), slice(180, 230)),
}

# (source, inverse scale or scale, antialiasing): the whole output is stored.
FULL_CASES = (
    ("astronaut_24x30", 1 / 2, True),
    ("astronaut_24x30", 1 / 3, True),
    ("astronaut_24x30", 1 / 4, True),
    ("astronaut_24x30", 1 / 2, False),
    ("chelsea_10x12", 2, True),
    ("chelsea_10x12", 3, True),
    ("chelsea_10x12", 4, True),
    ("camera_24x30", 1 / 3, True),
    ("camera_24x30", 2, True),
)
# (source, scale): the benchmark recipe imresize(modcrop(HR, s), 1/s) for downscales; mean, std and
# a fixed sample of output values are stored.
SAMPLED_CASES = (
    ("coffee_110x131", 1 / 2),
    ("coffee_110x131", 1 / 3),
    ("coffee_110x131", 1 / 4),
    ("astronaut_123x157", 1 / 2),
    ("astronaut_123x157", 1 / 3),
    ("astronaut_123x157", 1 / 4),
    ("chelsea_40x50", 2),
    ("chelsea_40x50", 4),
)
# (input length, scale): BasicSR's weights for one axis, densified, float64.
MATRIX_CASES = ((20, 3.0), (20, 1.5), (20, 0.7), (20, 1 / 3), (20, 1 / 4), (7, 1 / 4))


@functools.cache
def _photo(loader: Callable[[], np.ndarray]) -> np.ndarray:
    # Decoding the sample photos is slow-ish (astronaut ~1 s); every case reuses them read-only.
    photo = loader()
    photo.flags.writeable = False
    return photo


def load_source(name: str) -> np.ndarray:
    """A float32 crop in [0, 1] of a scikit-image sample photo."""
    loader, rows, cols = SOURCES[name]
    return np.ascontiguousarray(_photo(loader)[rows, cols]).astype(np.float32) / 255.0


def sampled_input(name: str, scale: float) -> np.ndarray:
    """Downscales take the benchmark's HR preparation: crop to a multiple of the integer factor."""
    img = load_source(name)
    return modcrop(img, round(1 / scale)) if scale < 1 else img


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("imresize_", "matrix_"))}


# ------------------------------------------------------------------------------------------------
# Agreement with BasicSR


@pytest.mark.parametrize("case", range(len(FULL_CASES)))
def test_full_outputs_match_basicsr(reference: dict[str, np.ndarray], case: int) -> None:
    name, scale, antialiasing = FULL_CASES[case]
    expected = reference[f"imresize_full_{case}"]
    img = load_source(name)
    out = imresize(img, scale, antialiasing=antialiasing)
    assert (
        out.shape
        == expected.shape
        == (math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale), *img.shape[2:])
    )
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", range(len(SAMPLED_CASES)))
def test_sampled_outputs_match_basicsr(reference: dict[str, np.ndarray], case: int) -> None:
    name, scale = SAMPLED_CASES[case]
    out = imresize(sampled_input(name, scale), scale)
    assert out.shape == tuple(reference[f"imresize_sample_{case}_shape"])
    flat = out.reshape(-1)
    np.testing.assert_allclose(
        flat[reference[f"imresize_sample_{case}_index"]],
        reference[f"imresize_sample_{case}_value"],
        rtol=0,
        atol=1e-5,
    )
    assert float(out.astype(np.float64).mean()) == pytest.approx(
        float(reference[f"imresize_sample_{case}_mean"]), abs=1e-6
    )
    assert float(out.astype(np.float64).std()) == pytest.approx(
        float(reference[f"imresize_sample_{case}_std"]), abs=1e-6
    )


@pytest.mark.parametrize("case", range(len(MATRIX_CASES)))
def test_resize_matrix_matches_basicsr_weights(reference: dict[str, np.ndarray], case: int) -> None:
    # Compared with BasicSR's weights computed in float64: this pins the kernel, the coordinate map and
    # the symmetric border handling exactly, also at scales where BasicSR's float32 arithmetic drifts.
    n, scale = MATRIX_CASES[case]
    expected = reference[f"matrix_{case}"]
    got = resize_matrix(n, math.ceil(n * scale), scale)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Properties


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 0.7, 1.5, 2, 3, 4])
def test_rows_sum_to_one_and_constants_are_kept(scale: float) -> None:
    m = resize_matrix(37, math.ceil(37 * scale), scale)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    img = np.full((37, 41, 3), 0.3, np.float32)
    np.testing.assert_allclose(imresize(img, scale), 0.3, atol=1e-6)


def test_identity_scale_is_identity() -> None:
    img = load_source("astronaut_24x30")
    np.testing.assert_allclose(imresize(img, 1), img, atol=1e-7)


def test_x2_downscale_is_symmetric_8_tap_filter() -> None:
    # At scale 1/2 output pixel 5 is centred at input position 10.5 (0-based) and the kernel is
    # cubic(x / 2) / 2, so it reads the 8 pixels 7..14 at distances 3.5, 2.5, ..., -3.5.
    m = resize_matrix(32, 16, 0.5)
    taps = np.array([0.5 * _cubic_keys(d / 2) for d in np.arange(3.5, -4, -1)])
    np.testing.assert_allclose(m[5, 7:15], taps / taps.sum(), atol=1e-15)
    np.testing.assert_array_equal(np.delete(m[5], np.arange(7, 15)), 0.0)
    np.testing.assert_allclose(m[5, 7:15], m[5, 7:15][::-1], atol=1e-15)


def _cubic_keys(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def test_no_clipping() -> None:
    # A sharp edge overshoots under bicubic interpolation; MATLAB keeps the overshoot for float input.
    img = np.zeros((16, 16), np.float32)
    img[:, 8:] = 1.0
    out = imresize(img, 2)
    assert out.max() > 1.0 and out.min() < 0.0


def test_gray_equals_channel() -> None:
    img = load_source("astronaut_24x30")
    full = imresize(img, 1 / 3)
    np.testing.assert_allclose(imresize(img[..., 1], 1 / 3), full[..., 1], atol=1e-7)


def test_float64_stays_float64() -> None:
    img = load_source("chelsea_10x12").astype(np.float64)
    out = imresize(img, 3)
    assert out.dtype == np.float64 and out.shape == (30, 36, 3)


def _brute_force_resize_1d(x: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's recipe written out pixel by pixel: weigh every integer tap near the centre, mirroring."""
    n = len(x)
    out = []
    for i in range(math.ceil(n * scale)):
        centre = (i + 0.5) / scale - 0.5  # 0-based source coordinate of output pixel i
        total = acc = 0.0
        for j in range(math.floor(centre) - 40, math.floor(centre) + 41):
            w = scale * _cubic_keys((centre - j) * scale) if scale < 1 else _cubic_keys(centre - j)
            k = j
            while not 0 <= k < n:  # reflect with the edge pixel repeated, as often as needed
                k = -k - 1 if k < 0 else 2 * n - 1 - k
            total += w
            acc += w * x[k]
        out.append(acc / total)
    return np.array(out)


@pytest.mark.parametrize(("n", "scale"), [(3, 1 / 4), (5, 1 / 3), (2, 4), (11, 0.7), (9, 1.5)])
def test_matches_brute_force_even_when_the_kernel_outgrows_the_image(n: int, scale: float) -> None:
    # At x1/4 the kernel spans 16 pixels, far wider than a 3-pixel image: the mirroring wraps around.
    x = np.random.default_rng(n).random(n)
    m = resize_matrix(n, math.ceil(n * scale), scale)
    np.testing.assert_allclose(m @ x, _brute_force_resize_1d(x, scale), rtol=0, atol=1e-12)


def test_errors() -> None:
    img = load_source("chelsea_10x12")
    with pytest.raises(SisrError, match="float32 or float64"):
        imresize((img * 255).astype(np.uint8), 0.5)
    with pytest.raises(SisrError, match=r"\(H, W\) or \(H, W, C\)"):
        imresize(img[None], 0.5)
    with pytest.raises(SisrError, match="positive"):
        imresize(img, 0)
    with pytest.raises(SisrError, match="positive"):
        imresize(img, float("nan"))
    with pytest.raises(SisrError, match="floating-point"):
        imresize_torch(torch.zeros(3, 4, 4, dtype=torch.uint8), 0.5)
    with pytest.raises(SisrError, match=r"\(C, H, W\) or \(B, C, H, W\)"):
        imresize_torch(torch.zeros(4, 4), 0.5)


# ------------------------------------------------------------------------------------------------
# bicubic_lr: the one LR image


def _im2uint(x: np.ndarray, top: float) -> np.ndarray:
    """MATLAB's im2uint8 / im2uint16 of a double image: round half away from zero, saturate."""
    return np.clip(np.floor(x * top + 0.5), 0, top)


def test_bicubic_lr_is_matlab_imresize_of_the_modcrop_rounded_like_im2uint8() -> None:
    hr = data.rocket()  # 427x640: mod-cropped at x2 and x3
    for s in (2, 3, 4):
        crop = modcrop(hr, s)
        expected = _im2uint(imresize(crop.astype(np.float64) / 255, 1 / s), 255)
        lr = bicubic_lr(hr, s)
        assert lr.dtype == np.uint8 and lr.shape == (hr.shape[0] // s, hr.shape[1] // s, 3)
        np.testing.assert_array_equal(lr, expected)
        # The held-out photographs' LR is this one (it once rounded float32 values half to even).
        np.testing.assert_array_equal(lr_of(crop, s), expected)
    deep = (data.camera()[:31, :42].astype(np.uint16) * 257) ^ np.uint16(0x5A)  # 16-bit gray, (H, W)
    lr16 = bicubic_lr(deep, 2)
    assert lr16.dtype == np.uint16 and lr16.shape == (15, 21)
    np.testing.assert_array_equal(
        lr16, _im2uint(imresize(deep[:30].astype(np.float64) / 65535, 1 / 2), 65535)
    )


def test_bicubic_lr_of_float_images_is_neither_rounded_nor_clipped() -> None:
    edge = np.zeros((8, 12, 3), np.float32)
    edge[:, 6:] = 1.0  # a sharp edge: bicubic overshoots on both sides
    lr = bicubic_lr(edge, 2)
    assert lr.dtype == np.float32
    np.testing.assert_array_equal(lr, imresize(edge, 1 / 2))
    assert lr.min() < 0 and lr.max() > 1


def test_bicubic_lr_errors() -> None:
    with pytest.raises(SisrError, match="image of 2x5 pixels is smaller than scale 3"):
        bicubic_lr(np.zeros((2, 5, 3), np.uint8), 3)
    with pytest.raises(SisrError, match="scale must be an integer >= 1"):
        bicubic_lr(np.zeros((8, 8, 3), np.uint8), 2.5)  # type: ignore[arg-type]
    with pytest.raises(SisrError, match="dtype int32"):
        bicubic_lr(np.zeros((8, 8, 3), np.int32), 2)


# ------------------------------------------------------------------------------------------------
# Torch twin


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2, 3])
def test_torch_matches_numpy(scale: float) -> None:
    imgs = [load_source("astronaut_123x157")[:48, :60], load_source("coffee_110x131")[:48, :60]]
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # (2, 3, 48, 60)
    out = imresize_torch(batch, scale)
    assert out.shape == (2, 3, math.ceil(48 * scale), math.ceil(60 * scale)) and out.dtype == torch.float32
    for n, img in enumerate(imgs):
        np.testing.assert_allclose(out[n].permute(1, 2, 0).numpy(), imresize(img, scale), rtol=0, atol=2e-6)
    single = imresize_torch(batch[1], scale)  # (C, H, W) input
    torch.testing.assert_close(single, out[1], rtol=0, atol=1e-6)
    double = imresize_torch(batch.double(), scale)
    np.testing.assert_allclose(
        double[0].permute(1, 2, 0).numpy(), imresize(imgs[0].astype(np.float64), scale), rtol=0, atol=1e-12
    )
