"""PSNR / SSIM: agreement with BasicSR's ``calculate_psnr`` / ``calculate_ssim`` and closed-form properties.

The reference numbers in ``fixtures/basicsr_reference.npz`` were computed by BasicSR on the same image
pairs this file builds (see ``fixtures/README.md``, "BasicSR reference values"); the pairs are crops of
scikit-image sample photos and integer/legacy-RNG degradations of them, so they are rebuilt here
bit-exactly and their SHA-256 is checked before the metrics are compared.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from sisr.errors import SisrError
from sisr.metrics import modcrop, psnr, psnr_torch, rgb_to_y, ssim, ssim_torch

FIXTURE = Path(__file__).parent / "fixtures" / "basicsr_reference.npz"

# name -> (loader, rows, cols): moderate crops with sizes that are not multiples of the scales.
IMAGES = {
    "astronaut": (data.astronaut, slice(30, 153), slice(170, 327)),  # 123 x 157 x 3
    "chelsea": (data.chelsea, slice(60, 160), slice(150, 290)),  # 100 x 140 x 3
    "coffee": (data.coffee, slice(120, 230), slice(200, 331)),  # 110 x 131 x 3
    "camera": (data.camera, slice(60, 170), slice(200, 318)),  # 110 x 118 gray
}
DEGRADATIONS = ("noise", "sparse", "blur", "blocky", "blur_noise")
CROP_BORDERS = (0, 2, 3, 4)


@functools.cache
def _photo(loader: Callable[[], np.ndarray]) -> np.ndarray:
    # Decoding the sample photos is slow-ish (astronaut ~1 s); every case reuses them read-only.
    photo = loader()
    photo.flags.writeable = False
    return photo


def load_crop(name: str) -> np.ndarray:
    """The uint8 crop of a scikit-image sample photo."""
    loader, rows, cols = IMAGES[name]
    return np.ascontiguousarray(_photo(loader)[rows, cols])


def _binomial_blur(img: np.ndarray) -> np.ndarray:
    """5x5 binomial blur ([1, 4, 6, 4, 1] / 16 per axis) in exact integer arithmetic, edges replicated."""
    k = (1, 4, 6, 4, 1)
    x = img.astype(np.int64)
    pad = [(2, 2), (2, 2)] + [(0, 0)] * (x.ndim - 2)
    x = np.pad(x, pad, mode="edge")
    height, width = img.shape[:2]
    rows = sum(k[i] * x[i : i + height] for i in range(5))
    full = sum(k[i] * rows[:, i : i + width] for i in range(5))
    return ((full + 128) // 256).astype(np.uint8)


def _add_noise(img: np.ndarray, sigma: float, rng: np.random.RandomState) -> np.ndarray:
    noisy = np.round(img.astype(np.float64) + rng.normal(0.0, sigma, img.shape))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A deterministic degraded copy of ``img`` (uint8); reproducible across platforms and versions.

    Only integer arithmetic and numpy's legacy ``RandomState`` (whose streams numpy keeps frozen).
    """
    rng = np.random.RandomState(seed)
    if kind == "noise":  # Gaussian noise, ~32 dB
        return _add_noise(img, 6.0, rng)
    if kind == "sparse":  # +-1 on 5 % of the values: a near-perfect result, 60-66 dB
        flip = rng.random_sample(img.shape) < 0.05
        sign = rng.randint(0, 2, img.shape) * 2 - 1
        return np.clip(img.astype(np.int64) + flip * sign, 0, 255).astype(np.uint8)
    if kind == "blur":
        return _binomial_blur(img)
    if kind == "blocky":  # nearest-neighbour x3 down and up
        height, width = img.shape[:2]
        return np.ascontiguousarray(img[::3, ::3].repeat(3, axis=0).repeat(3, axis=1)[:height, :width])
    if kind == "blur_noise":
        return _add_noise(_binomial_blur(img), 2.0, rng)
    raise ValueError(kind)


def case_seed(image: str, kind: str) -> int:
    return zlib.crc32(f"{image}/{kind}".encode())


def make_pair(image: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, reference) uint8 pair for one case."""
    ref = load_crop(image)
    return degrade(ref, kind, case_seed(image, kind)), ref


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("metrics_")}


# ------------------------------------------------------------------------------------------------
# Agreement with BasicSR


@pytest.mark.parametrize("image", list(IMAGES))
def test_matches_basicsr(reference: dict[str, np.ndarray], image: str) -> None:
    assert list(reference["metrics_images"]) == list(IMAGES)
    assert list(reference["metrics_degradations"]) == list(DEGRADATIONS)
    assert list(reference["metrics_crop_borders"]) == list(CROP_BORDERS)
    i = list(IMAGES).index(image)
    for j, kind in enumerate(DEGRADATIONS):
        img, ref = make_pair(image, kind)
        # The pair must be bit-identical to the one BasicSR scored.
        assert sha256(img) == reference["metrics_sha256"][i, j], f"{image}/{kind} pair differs"
        for k, crop in enumerate(CROP_BORDERS):
            for y in (0, 1):
                expected_psnr = float(reference["metrics_psnr"][i, j, k, y])
                expected_ssim = float(reference["metrics_ssim"][i, j, k, y])
                got_psnr = psnr(img, ref, crop_border=crop, y_channel=bool(y))
                got_ssim = ssim(img, ref, crop_border=crop, y_channel=bool(y))
                where = f"{image}/{kind} crop={crop} y={y}"
                assert abs(got_psnr - expected_psnr) < 1e-4, (where, got_psnr, expected_psnr)
                assert abs(got_ssim - expected_ssim) < 1e-6, (where, got_ssim, expected_ssim)


def test_reference_covers_a_wide_range(reference: dict[str, np.ndarray]) -> None:
    # Guards the fixture itself: the cases span weak to near-perfect results, and the Y channel matters.
    p, s = reference["metrics_psnr"], reference["metrics_ssim"]
    assert p.min() < 25 and p.max() > 55
    assert s.min() < 0.8 and s.max() > 0.99
    colour = [i for i, n in enumerate(reference["metrics_images"]) if n != "camera"]
    assert np.abs(p[colour, ..., 1] - p[colour, ..., 0]).max() > 0.5


# ------------------------------------------------------------------------------------------------
# Colour conversion


def test_rgb_to_y_matches_bt601_formula() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    r, g, b = (img[..., c].astype(np.float64) / 255.0 for c in range(3))
    expected = (16.0 / 255.0 + 65.481 / 255.0 * r + 128.553 / 255.0 * g + 24.966 / 255.0 * b) * 255.0
    np.testing.assert_allclose(rgb_to_y(img), expected, rtol=0, atol=1e-10)
    assert rgb_to_y(img).dtype == np.float64


def test_rgb_to_y_extremes_and_channel_order() -> None:
    black = np.zeros((2, 2, 3), np.uint8)
    white = np.full((2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(rgb_to_y(black), 16.0, atol=1e-12)
    np.testing.assert_allclose(rgb_to_y(white), 235.0, atol=1e-12)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((1, 1, 3), np.uint8)
    blue[..., 2] = 255
    # Input is RGB: pure red gets the 65.481 weight, pure blue 24.966 (BGR order would swap them).
    assert rgb_to_y(red)[0, 0] == pytest.approx(16.0 + 65.481)
    assert rgb_to_y(blue)[0, 0] == pytest.approx(16.0 + 24.966)


# ------------------------------------------------------------------------------------------------
# Properties


def test_psnr_identical_is_inf() -> None:
    img = load_crop("chelsea")
    assert psnr(img, img.copy()) == math.inf
    assert psnr(img, img, crop_border=4, y_channel=True) == math.inf


@pytest.mark.parametrize("offset", [1, 5, 17])
def test_psnr_constant_offset_closed_form(offset: int) -> None:
    rng = np.random.default_rng(offset)
    ref = rng.integers(0, 256 - offset, (40, 50, 3), dtype=np.uint8)
    img = ref + np.uint8(offset)
    assert psnr(img, ref) == pytest.approx(20 * math.log10(255 / offset), abs=1e-12)
    # On Y the offset is scaled by the sum of the BT.601 weights, (65.481 + 128.553 + 24.966) / 255.
    y_offset = offset * 219.0 / 255.0
    assert psnr(img, ref, y_channel=True) == pytest.approx(20 * math.log10(255 / y_offset), abs=1e-9)


def test_psnr_gray_forms_agree_and_ignore_y_channel() -> None:
    img, ref = make_pair("camera", "noise")
    p = psnr(img, ref, crop_border=3)
    assert psnr(img[..., None], ref[..., None], crop_border=3) == p
    assert psnr(img, ref, crop_border=3, y_channel=True) == p
    assert ssim(img, ref, y_channel=True) == ssim(img[..., None], ref[..., None])


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_symmetric(metric) -> None:
    img, ref = make_pair("coffee", "blur_noise")
    assert metric(img, ref, crop_border=2, y_channel=True) == pytest.approx(
        metric(ref, img, crop_border=2, y_channel=True), abs=1e-12
    )


def test_ssim_identical_is_one() -> None:
    img = load_crop("astronaut")
    assert ssim(img, img.copy()) == 1.0
    assert ssim(img, img, crop_border=3, y_channel=True) == 1.0


def test_ssim_orders_degradations() -> None:
    ref = load_crop("coffee")
    rng = np.random.RandomState(0)
    values = [ssim(_add_noise(ref, sigma, rng), ref) for sigma in (1.0, 4.0, 16.0)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_crop_border_ignores_the_border(metric) -> None:
    ref = load_crop("chelsea")
    img = ref.copy()
    img[:3] = 0  # damage only the 3-pixel frame
    img[-3:] = 255
    img[:, :3] = 0
    img[:, -3:] = 255
    assert metric(img, ref, crop_border=3) == metric(ref, ref, crop_border=3)
    assert metric(img, ref, crop_border=2) < metric(ref, ref, crop_border=2)


def test_crop_border_equals_manual_crop() -> None:
    img, ref = make_pair("astronaut", "noise")
    c = 4
    inner = (slice(c, -c), slice(c, -c))
    assert psnr(img, ref, crop_border=c, y_channel=True) == psnr(img[inner], ref[inner], y_channel=True)
    assert ssim(img, ref, crop_border=c) == ssim(img[inner], ref[inner])


def test_ssim_colour_is_mean_of_channels() -> None:
    img, ref = make_pair("chelsea", "blur")
    per_channel = [ssim(img[..., c], ref[..., c]) for c in range(3)]
    assert ssim(img, ref) == pytest.approx(np.mean(per_channel), abs=1e-15)


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_bad_inputs_raise(metric) -> None:
    ref = load_crop("chelsea")
    with pytest.raises(SisrError, match="shapes differ"):
        metric(ref[:-1], ref)
    with pytest.raises(SisrError, match="uint8"):
        metric(ref.astype(np.float32), ref)
    with pytest.raises(SisrError, match="uint8"):
        metric(ref, ref.astype(np.uint16))
    with pytest.raises(SisrError, match=r"\(H, W, 3\)"):
        metric(ref[..., :2], ref[..., :2])
    with pytest.raises(SisrError, match="crop_border"):
        metric(ref, ref, crop_border=-1)
    with pytest.raises(SisrError, match="leaves nothing"):
        metric(ref, ref, crop_border=50)
    with pytest.raises(SisrError, match="numpy array"):
        metric(ref.tolist(), ref)


def test_ssim_needs_a_full_window() -> None:
    ref = load_crop("chelsea")[:20, :20]
    with pytest.raises(SisrError, match="11x11"):
        ssim(ref, ref, crop_border=5)


def test_rgb_to_y_rejects() -> None:
    with pytest.raises(SisrError, match="uint8"):
        rgb_to_y(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(SisrError, match="RGB"):
        rgb_to_y(np.zeros((4, 4), np.uint8))


def test_modcrop() -> None:
    img = load_crop("astronaut")  # 123 x 157
    assert modcrop(img, 4).shape == (120, 156, 3)
    assert modcrop(img, 3).shape == (123, 156, 3)
    assert modcrop(img[..., 0], 2).shape == (122, 156)
    np.testing.assert_array_equal(modcrop(img, 4), img[:120, :156])
    with pytest.raises(SisrError, match="positive integer"):
        modcrop(img, 0)
    with pytest.raises(SisrError, match="positive integer"):
        modcrop(img, 2.0)
    with pytest.raises(SisrError, match="smaller"):
        modcrop(img[:2], 3)


# ------------------------------------------------------------------------------------------------
# Torch twins


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize("crop", [0, 3])
def test_torch_versions_match_numpy(y_channel: bool, crop: int) -> None:
    pairs = [make_pair("chelsea", kind) for kind in ("noise", "sparse", "blocky")]
    pairs.append((pairs[0][1], pairs[0][1]))  # an identical pair -> inf / 1
    img = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2)
    ref = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2)
    got_p = psnr_torch(img, ref, crop_border=crop, y_channel=y_channel)
    got_s = ssim_torch(img, ref, crop_border=crop, y_channel=y_channel)
    assert got_p.shape == got_s.shape == (len(pairs),)
    assert got_p.dtype == got_s.dtype == torch.float64
    for n, (a, b) in enumerate(pairs):
        want_p = psnr(a, b, crop_border=crop, y_channel=y_channel)
        want_s = ssim(a, b, crop_border=crop, y_channel=y_channel)
        assert float(got_p[n]) == pytest.approx(want_p, abs=1e-9) or (
            math.isinf(want_p) and got_p[n] == want_p
        )
        assert float(got_s[n]) == pytest.approx(want_s, abs=1e-12)
    assert math.isinf(float(got_p[-1])) and float(got_s[-1]) == pytest.approx(1.0, abs=1e-12)


def test_torch_gray_and_errors() -> None:
    img, ref = make_pair("camera", "blur")
    ti, tr = torch.from_numpy(img)[None, None], torch.from_numpy(ref)[None, None]
    assert float(psnr_torch(ti, tr, crop_border=2)[0]) == pytest.approx(
        psnr(img, ref, crop_border=2), abs=1e-9
    )
    assert float(ssim_torch(ti, tr, y_channel=True)[0]) == pytest.approx(ssim(img, ref), abs=1e-12)
    with pytest.raises(SisrError, match="uint8"):
        psnr_torch(ti.float(), tr)
    with pytest.raises(SisrError, match="shapes differ"):
        ssim_torch(ti[..., 1:], tr)
    with pytest.raises(SisrError, match=r"\(B, 1 or 3, H, W\)"):
        psnr_torch(ti[0], tr[0])
