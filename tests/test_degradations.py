"""Real-ESRGAN's degradations (sisr.data.degradations): parity with BasicSR, settings, determinism."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data

from sisr.config import from_dict, load_config
from sisr.data import degradations as D
from sisr.data.build import datasets_from_config
from sisr.errors import SisrError
from sisr.prepare import make_degraded

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "degradations" / "basicsr_degradations.npz")

# Every degradation option of Real-ESRGAN's options/train_realesrnet_x4plus.yml (its top-level model
# options and its dataset's kernel options), with that file's values and spelling (ints where it has ints).
REALESRNET_X4PLUS = """
gt_usm: True  # USM the ground-truth
resize_prob: [0.2, 0.7, 0.1]  # up, down, keep
resize_range: [0.15, 1.5]
gaussian_noise_prob: 0.5
noise_range: [1, 30]
poisson_scale_range: [0.05, 3]
gray_noise_prob: 0.4
jpeg_range: [30, 95]
second_blur_prob: 0.8
resize_prob2: [0.3, 0.4, 0.3]  # up, down, keep
resize_range2: [0.3, 1.2]
gaussian_noise_prob2: 0.5
noise_range2: [1, 25]
poisson_scale_range2: [0.05, 2.5]
gray_noise_prob2: 0.4
jpeg_range2: [30, 95]
blur_kernel_size: 21
kernel_list: ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
kernel_prob: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
sinc_prob: 0.1
blur_sigma: [0.2, 3]
betag_range: [0.5, 4]
betap_range: [1, 2]
blur_kernel_size2: 21
kernel_list2: ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
kernel_prob2: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
sinc_prob2: 0.1
blur_sigma2: [0.2, 1.5]
betag_range2: [0.5, 4]
betap_range2: [1, 2]
final_sinc_prob: 0.8
"""


# ---------------------------------------------------------------------------------------------------------
# Parity with BasicSR (fixtures: tests/fixtures/degradations/README.md)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("k_iso", lambda: D.bivariate_gaussian(21, 2.0, 2.0, 0.0, isotropic=True)),
        ("k_aniso", lambda: D.bivariate_gaussian(21, 1.5, 3.0, 0.7, isotropic=False)),
        (
            "k_generalized_iso",
            lambda: D.bivariate_generalized_gaussian(15, 1.2, 1.2, 0.0, 0.7, isotropic=True),
        ),
        (
            "k_generalized_aniso",
            lambda: D.bivariate_generalized_gaussian(21, 2.5, 0.8, -1.1, 2.5, isotropic=False),
        ),
        ("k_plateau_iso", lambda: D.bivariate_plateau(11, 1.8, 1.8, 0.0, 1.5, isotropic=True)),
        ("k_plateau_aniso", lambda: D.bivariate_plateau(21, 0.9, 2.7, 2.3, 1.2, isotropic=False)),
        ("k_sinc_13", lambda: D.circular_lowpass_kernel(math.pi / 3, 13)),
        ("k_sinc_7_pad21", lambda: D.circular_lowpass_kernel(2.0, 7, pad_to=21)),
        ("k_sinc_21", lambda: D.circular_lowpass_kernel(math.pi / 5 + 0.3, 21)),
    ],
)
def test_kernels_equal_basicsr(name: str, make: Callable[[], np.ndarray]) -> None:
    ours, ref = make(), FIXTURES[name]
    assert ours.shape == ref.shape
    # The Gaussian-family kernels are the same float64 operations; the sinc's J1 is computed another
    # way (Bessel's integral instead of scipy), equal to within float64 rounding.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)
    assert ours.sum() == pytest.approx(1.0, abs=1e-12)


def test_bessel_j1_equals_scipy() -> None:
    special = pytest.importorskip("scipy.special")
    x = np.linspace(-45, 45, 2001)
    np.testing.assert_allclose(D.bessel_j1(x), special.j1(x), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="60"):
        D.bessel_j1(np.array([61.0]))


@pytest.mark.parametrize("kernel", ["k_aniso", "k_sinc_13"])
def test_filter2d_equals_basicsr(kernel: str) -> None:
    img = torch.from_numpy(FIXTURES["img"])
    ref = FIXTURES[f"filter2d_{kernel.removeprefix('k_').replace('_', '')}"]
    assert torch.equal(D.filter2d(img, FIXTURES[kernel]), torch.from_numpy(ref))


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_resizes_equal_basicsr(mode: str) -> None:
    img = torch.from_numpy(FIXTURES["img"])
    for key, kwargs in (
        ("s0.6", {"scale_factor": 0.6}),
        ("s1.37", {"scale_factor": 1.37}),
        ("13x17", {"size": (13, 17)}),
    ):
        out = D.resize(img, mode=mode, **kwargs)  # type: ignore[arg-type]
        assert torch.equal(out, torch.from_numpy(FIXTURES[f"resize_{mode}_{key}"])), key


def test_resize_antialias_option_filters_downscales_only() -> None:
    # sisr's resize_antialias: bilinear/bicubic shrink as torch's antialias=True (Pillow-like); area and
    # upscales are unchanged, and the default (Real-ESRGAN's) stays aliased.
    stripes = torch.zeros(1, 1, 6, 48)
    stripes[..., ::2] = 1.0  # Nyquist stripes: aliasing keeps them, a low-pass averages them to 0.5
    aliased = D.resize(stripes, mode="bilinear", size=(2, 16))  # 3x: samples fall on single pixels
    filtered = D.resize(stripes, mode="bilinear", size=(2, 16), antialias=True)
    assert (aliased - 0.5).abs().max() > 0.4 and (filtered - 0.5).abs().max() < 0.1
    img = torch.from_numpy(FIXTURES["img"])
    assert torch.equal(
        D.resize(img, mode="area", scale_factor=0.6, antialias=True),
        D.resize(img, mode="area", scale_factor=0.6),
    )
    expected = torch.nn.functional.interpolate(img, scale_factor=0.6, mode="bicubic", antialias=True)
    assert torch.equal(D.resize(img, mode="bicubic", scale_factor=0.6, antialias=True), expected)
    # In the chain: the same draws, a different (smoother) LR.
    gt = torch.from_numpy(data.astronaut()[:96, :128].astype(np.float32) / 255).permute(2, 0, 1).contiguous()
    plain = D.Degradation(resize_prob2=(0.0, 1.0, 0.0))
    smooth = D.Degradation(resize_prob2=(0.0, 1.0, 0.0), resize_antialias=True)
    pairs = [
        [D.degrade(gt, scale=4, settings=x, rng=np.random.default_rng(seed)) for x in (plain, smooth)]
        for seed in range(4)
    ]
    # (a draw whose every resize is "area" gives the same LR both ways)
    assert any(not torch.equal(*pair) for pair in pairs)


@pytest.mark.parametrize("gray", [False, True])
def test_noise_from_a_generator_state_equals_basicsr(gray: bool) -> None:
    img = torch.from_numpy(FIXTURES["img"])
    gauss = D.gaussian_noise(img, sigma=7.5, gray=gray, generator=torch.Generator().manual_seed(123))
    assert torch.equal(gauss, torch.from_numpy(FIXTURES[f"gauss_gray{int(gray)}"]))
    shot = D.poisson_noise(img, scale=1.7, gray=gray, generator=torch.Generator().manual_seed(321))
    assert torch.equal(shot, torch.from_numpy(FIXTURES[f"poisson_gray{int(gray)}"]))
    if gray:  # one field for all channels
        assert torch.equal(gauss[:, 0], gauss[:, 2]) and torch.equal(shot[:, 0], shot[:, 1])


def test_usm_sharp_equals_basicsr() -> None:
    out = D.usm_sharp(torch.from_numpy(FIXTURES["usm_img"]))
    # BasicSR convolves with the 51x51 outer product; here two 1-D passes: float32 rounding apart.
    np.testing.assert_allclose(out.numpy(), FIXTURES["usm"], rtol=0, atol=2e-6)


def test_jpeg_is_pillow_at_the_quality() -> None:
    img = torch.from_numpy(data.astronaut()[:48, :64].astype(np.float32) / 255).permute(2, 0, 1)[None]
    out = D.jpeg(img, quality=37)
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()[:48, :64]).save(buffer, format="JPEG", quality=37)
    expected = np.asarray(Image.open(buffer)).astype(np.float32) / 255
    assert torch.equal(out[0].permute(1, 2, 0), torch.from_numpy(expected))


# ---------------------------------------------------------------------------------------------------------
# Settings


def test_every_option_of_realesrnet_x4plus_loads_unchanged() -> None:
    values = yaml.safe_load(REALESRNET_X4PLUS)
    settings = from_dict(D.Degradation, values, path="datasets.train.degradation")
    for key, value in values.items():
        got = getattr(settings, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert settings == D.Degradation()  # the defaults are that recipe


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jpeg_rang": [30, 95]}, r"degradation\.jpeg_rang: unknown key; did you mean 'jpeg_range'\?"),
        ({"resize_prob": [0.5, 0.5, 0.5]}, r"degradation\.resize_prob: \(up, down, keep\) probabilities"),
        ({"kernel_prob": [1.0]}, r"degradation\.kernel_prob: one probability per kernel_list entry: 1 for 6"),
        ({"kernel_list": ["iso", "box"]}, r"degradation\.kernel_list\[1\]: expected one of"),
        ({"blur_kernel_size": 20}, r"degradation\.blur_kernel_size: must be an odd integer >= 7"),
        ({"noise_range": [30, 1]}, r"degradation\.noise_range: must be \[low, high\]"),
        ({"jpeg_range2": [0, 95]}, r"degradation\.jpeg_range2: values must be >= 1"),
        ({"sinc_prob": 1.5}, r"degradation\.sinc_prob: must be a probability"),
    ],
)
def test_bad_settings_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(SisrError, match=message):
        from_dict(D.Degradation, values, path="degradation")


# ---------------------------------------------------------------------------------------------------------
# The chain and the datasets


def test_degrade_gives_an_lr_of_8_bit_levels_drawn_from_the_generator() -> None:
    gt = torch.from_numpy(data.astronaut()[:96, :128].astype(np.float32) / 255).permute(2, 0, 1).contiguous()
    settings = D.Degradation()
    outs = [D.degrade(gt, scale=4, settings=settings, rng=np.random.default_rng(s)) for s in (1, 1, 2)]
    assert outs[0].shape == (3, 24, 32) and outs[0].dtype == torch.float32
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    levels = outs[0] * 255
    assert torch.equal(levels, levels.round()) and 0 <= outs[0].min() and outs[0].max() <= 1
    # Not a clean downscale: at least one of a few draws differs a lot from bicubic.
    bicubic = torch.nn.functional.interpolate(gt[None], scale_factor=0.25, mode="bicubic", antialias=True)[0]
    assert max((o - bicubic).abs().mean().item() for o in outs) > 0.01


def test_degrade_survives_tiny_patches_and_extreme_settings() -> None:
    gt = torch.rand(3, 16, 16)
    extreme = D.Degradation(
        resize_prob=(0.0, 1.0, 0.0), resize_range=(0.05, 0.1), sinc_prob=1.0, final_sinc_prob=1.0
    )
    for seed in range(5):
        out = D.degrade(gt, scale=4, settings=extreme, rng=np.random.default_rng(seed))
        assert out.shape == (3, 4, 4) and torch.isfinite(out).all()


def _config_file(tmp_path: Path, train: dict) -> Path:
    folder = tmp_path / "gt"
    folder.mkdir(exist_ok=True)
    for i, img in enumerate((data.astronaut()[:120, :120], data.coffee()[:100, :140])):
        Image.fromarray(np.ascontiguousarray(img)).save(folder / f"{i}.png")
    cfg = {
        "name": "real",
        "scale": 4,
        "network_g": {"type": "SeemoRe", "embedding_dim": 16, "num_layers": 1, "num_experts": 2, "topk": 1},
        "datasets": {"train": {"name": "gt", "dataroot_gt": str(folder), "gt_size": 64, **train}},
    }
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("kind", ["GTOnlyDataset", "PairedImageDataset"])
def test_a_degradation_block_makes_the_lr_of_a_train_entry(tmp_path: Path, kind: str) -> None:
    path = _config_file(tmp_path, {"type": kind, "degradation": {"jpeg_range": [40, 60]}})
    config, _ = load_config(path)
    assert config.datasets["train"].degradation == D.Degradation(jpeg_range=(40.0, 60.0))
    dataset = datasets_from_config(config, phases=("train",))["train"]
    a, b, c = dataset[(0, 11)], dataset[(0, 11)], dataset[(0, 12)]
    assert a["lq"].shape == (3, 16, 16) and a["gt"].shape == (3, 64, 64)
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])  # a function of the key
    assert not torch.equal(a["lq"], c["lq"])


def test_degradation_errors_name_the_key_path(tmp_path: Path) -> None:
    path = _config_file(tmp_path, {"type": "GTOnlyDataset", "degradation": {"gray_noise_prob": 2}})
    with pytest.raises(
        SisrError, match=r"datasets\.train\.degradation\.gray_noise_prob: must be a probability"
    ):
        load_config(path)
    path = _config_file(
        tmp_path,
        {"type": "PairedImageDataset", "dataroot_lq": str(tmp_path), "degradation": {}},
    )
    with pytest.raises(SisrError, match=r"datasets\.train\.dataroot_lq: degradation makes the LR image"):
        load_config(path)
    cfg = yaml.safe_load(path.read_text())
    cfg["datasets"]["train"].pop("dataroot_lq")
    cfg["datasets"]["val"] = {
        "name": "v",
        "type": "GTOnlyDataset",
        "dataroot_gt": str(tmp_path),
        "degradation": {},
    }
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(
        SisrError, match=r"datasets\.val\.degradation: only a train entry degrades on the fly"
    ):
        load_config(path)


# ---------------------------------------------------------------------------------------------------------
# sisr prepare degrade


def _hr_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    Image.fromarray(data.astronaut()[:90, :130]).save(folder / "a.png")
    Image.fromarray(data.camera()[:81, :64]).save(folder / "b.png")  # gray, not a multiple of 4
    return folder


def test_prepare_degrade_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    hr = _hr_folder(tmp_path)
    for name, seed, workers in (("one", 5, 1), ("two", 5, 2), ("other", 6, 1)):
        summary = make_degraded(hr, tmp_path / name, scale=4, seed=seed, workers=workers)
        assert summary.images == summary.written == 2
    for stem, size in (("a", (22, 32)), ("b", (20, 16))):
        one = np.asarray(Image.open(tmp_path / "one" / "X4" / f"{stem}x4.png"))
        two = np.asarray(Image.open(tmp_path / "two" / "X4" / f"{stem}x4.png"))
        other = np.asarray(Image.open(tmp_path / "other" / "X4" / f"{stem}x4.png"))
        assert one.shape == (*size, 3) and one.dtype == np.uint8
        assert np.array_equal(one, two)  # the same set whatever the number of workers
        assert not np.array_equal(one, other)


@pytest.mark.slow
def test_prepare_degrade_command_and_its_bad_settings(tmp_path: Path) -> None:
    hr = _hr_folder(tmp_path)
    settings = tmp_path / "s.yml"
    settings.write_text("jpeg_range: [20, 30]\ngt_usm: false\n")
    cmd = [sys.executable, "-m", "sisr", "prepare", "degrade", str(hr), str(tmp_path / "out"), "--scale", "2"]
    done = subprocess.run([*cmd, "--seed", "3", "--settings", str(settings)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote 2 degraded LR images (x2, seed 3)" in done.stdout
    assert (tmp_path / "out" / "X2" / "ax2.png").is_file()
    settings.write_text("jpeg_range: [20, 300]\n")
    done = subprocess.run([*cmd, "--settings", str(settings)], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"sisr: error: {settings}: degradation.jpeg_range: JPEG qualities are at most 100, got [20.0, 300.0]"
    )


def test_held_out_lr_degradations_are_fixed_and_ordered() -> None:
    from sisr.heldout import LR_DEGRADATIONS, degrade_lr, lr_of, photo
    from sisr.metrics import psnr

    lr = lr_of(photo("chelsea")[:120, :160], 4)
    out = {d: degrade_lr(lr, d, photo_name="chelsea") for d in LR_DEGRADATIONS}
    assert np.array_equal(out["clean"], lr)
    assert all(o.shape == lr.shape and o.dtype == np.uint8 for o in out.values())
    assert np.array_equal(out["noise5"], degrade_lr(lr, "noise5", photo_name="chelsea"))  # seeded
    scores = {d: psnr(o, lr, crop_border=0, y_channel=True) for d, o in out.items() if d != "clean"}
    assert scores["jpeg90"] > scores["jpeg75"] > scores["jpeg50"]
    assert scores["noise5"] > scores["noise10"]
    assert scores["blur"] < 45
    with pytest.raises(SisrError, match="unknown degradation 'jpeg10'; known: clean, jpeg90"):
        degrade_lr(lr, "jpeg10", photo_name="chelsea")
