"""LAM (sisr.analysis.lam): Gini, the blur path, parity with LAM_Demo, long-range attribution, the workflow.

The parity fixture (tests/fixtures/lam/seemore_x4.npz, see tests/fixtures/lam/README.md) holds what the
reference code computed for a small SeemoRe whose weights :func:`seemore_from_fixture` rebuilds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from torch import nn

from _weights import canonical_state_dict, perturbed_state_dict
from sisr.analysis import figures
from sisr.analysis.lam import (
    LamSettings,
    blur_path,
    diffusion_index,
    edge_objective,
    gaussian_kernel,
    gini,
    lam,
    make_lr,
    map_paths,
    run_lam,
)
from sisr.errors import SisrError
from sisr.models.mma import MMA, BiMamba
from sisr.models.seemore import SeemoRe

FIXTURE = Path(__file__).parent / "fixtures" / "lam" / "seemore_x4.npz"


# ---------------------------------------------------------------------------------------------------------
# Gini and DI


def test_gini_of_known_vectors():
    # sum((2i - n - 1) x_(i)) / (n sum x): [1, 2, 3, 4] -> 10 / 40.
    assert gini(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.25, abs=1e-6)
    # Negative values are shifted to start at 0: [-1, 0, 1, 2] is [0, 1, 2, 3] -> 10 / 24.
    assert gini(np.array([-1.0, 0.0, 1.0, 2.0])) == pytest.approx(10 / 24, abs=1e-6)
    # Order does not matter; a flat map has Gini 0 and DI 100.
    assert gini(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(0.25, abs=1e-6)
    assert gini(np.full(100, 0.3, dtype=np.float32)) == pytest.approx(0.0, abs=1e-6)
    assert diffusion_index(np.ones((8, 8), dtype=np.float32)) == pytest.approx(100.0, abs=1e-4)
    # All mass on one of n values: (n - 1) / n, up to the reference's 1e-7 offset.
    one_hot = np.zeros(1000, dtype=np.float32)
    one_hot[17] = 1.0
    assert gini(one_hot) == pytest.approx(0.999, abs=1e-4)
    assert diffusion_index(one_hot) == pytest.approx(0.1, abs=1e-2)


def test_gini_leaves_its_input_alone():
    a = np.array([[-1.0, 2.0], [0.5, 0.0]], dtype=np.float32)
    before = a.copy()
    gini(a)
    np.testing.assert_array_equal(a, before)


# ---------------------------------------------------------------------------------------------------------
# The blur path


def correlate_reflect101(channel: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D's default by hand: numpy's 'reflect' pad is reflect-101 (the edge is not repeated)."""
    r = kernel.shape[0] // 2
    padded = np.pad(channel.astype(np.float64), r, mode="reflect")
    out = np.zeros(channel.shape)
    for i in range(channel.shape[0]):
        for j in range(channel.shape[1]):
            out[i, j] = np.sum(padded[i : i + kernel.shape[0], j : j + kernel.shape[1]] * kernel)
    return out


@pytest.mark.parametrize("shape,size", [((3, 11, 13), 9), ((2, 4, 5), 9), ((1, 6, 6), 5)])
def test_blur_path_matches_direct_convolution(shape, size):
    # (2, 4, 5) with a 9x9 kernel pads by more than the image: the border reflects more than once.
    image = torch.from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32))
    sigma, fold = 1.2, 6
    images, weights = blur_path(image, sigma=sigma, fold=fold, kernel=size)
    assert images.shape == weights.shape == (fold, *shape)
    kernels = [gaussian_kernel(size, s) for s in np.linspace(sigma, 0, fold + 1)]
    for i in range(fold):
        for c in range(shape[0]):
            x = image[c].numpy()
            expected = correlate_reflect101(x, kernels[i + 1])  # step i feeds kernel i + 1
            expected_w = correlate_reflect101(x, (kernels[i + 1] - kernels[i]) * fold)
            np.testing.assert_allclose(images[i, c].numpy(), expected, rtol=0, atol=2e-6)
            np.testing.assert_allclose(weights[i, c].numpy(), expected_w, rtol=0, atol=2e-5)
    # The last step is the image itself (sigma 0 + 1e-5 is a delta); the sigma image is never fed.
    np.testing.assert_allclose(images[-1].numpy(), image.numpy(), rtol=0, atol=1e-6)


def test_gaussian_kernel_conventions():
    k = gaussian_kernel(9, 1.2)
    assert k.shape == (9, 9) and k.sum() == pytest.approx(1.0)
    assert k[4, 4] == k.max() and np.allclose(k, k.T) and np.allclose(k, k[::-1])
    ax = np.arange(-4, 5)
    g = np.exp(-(ax[:, None] ** 2 + ax[None] ** 2) / (2 * (1.2 + 1e-5) ** 2))  # sigma + 1e-5
    np.testing.assert_allclose(k, g / g.sum(), rtol=1e-12)


def full_attr_grad(sr: torch.Tensor, h: int, w: int, window: int) -> torch.Tensor:
    """LAM_Demo's attr_grad written out: edge magnitudes over the whole image, then the crop, per item."""
    dh = (sr[:, :, :-1, :] - sr[:, :, 1:, :]) ** 2
    dw = (sr[:, :, :, :-1] - sr[:, :, :, 1:]) ** 2
    grad = torch.sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])
    return grad[:, :, h : h + window, w : w + window].sum(dim=(1, 2, 3))


@pytest.mark.parametrize("h,w", [(0, 0), (5, 7), (16, 24), (13, 20)])
def test_edge_objective_crops_like_the_reference(h, w):
    # (16, 24): the window touches the bottom and right borders, where there are no forward differences.
    sr = torch.from_numpy(np.random.default_rng(1).random((2, 3, 20, 28)))
    torch.testing.assert_close(edge_objective(sr, h, w, 4), full_attr_grad(sr, h, w, 4), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------------------
# Parity with LAM_Demo


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def seemore_from_fixture(reference: dict) -> SeemoRe:
    settings = json.loads(str(reference["settings"]))
    model = SeemoRe(**settings["config"])
    weights = canonical_state_dict(model.state_dict())
    model.load_state_dict(perturbed_state_dict(weights, seed=settings["seed"], scale=settings["noise"]))
    return model.eval()


def test_pil_lr_is_the_references(reference):
    np.testing.assert_array_equal(make_lr(reference["hr"], 4, "pil"), reference["lr"])


@pytest.mark.parametrize("index", [0, 1])
def test_parity_with_reference(reference, index):
    settings = json.loads(str(reference["settings"]))
    model = seemore_from_fixture(reference)
    h, w = (int(v) for v in reference["positions"][index])
    keys = ("window", "sigma", "fold", "kernel")
    st = LamSettings(pos=(h, w), **{k: settings[k] for k in keys})
    result = lam(model, reference["hr"], st, batch_size=17)  # batches that do not divide fold
    expected = reference["map"][index]
    assert result.map.dtype == np.float32 and result.map.shape == expected.shape == (24, 24)
    assert np.abs(result.map - expected).max() < 1e-4
    assert abs(result.diffusion_index - reference["diffusion_index"][index]) < 0.01
    assert abs(result.gini - reference["gini"][index]) < 1e-4
    # The figures match LAM_Demo's vis_saliency / vis_saliency_kde (matplotlib's seismic, scipy's KDE).
    saliency = figures.saliency_image(result.map, 4)
    kde = figures.kde_image(result.map, 4)
    assert np.abs(saliency.astype(int) - reference["saliency_image"][index]).max() <= 1
    assert np.abs(kde.astype(int) - reference["kde_image"][index]).max() <= 1


def test_the_two_fixture_windows_differ(reference):
    # The fixture is not trivial: the maps differ and are not flat.
    a, b = reference["map"]
    assert np.abs(a - b).max() > 0.5
    assert 1 < reference["diffusion_index"].min() < 99


# ---------------------------------------------------------------------------------------------------------
# Long range: MMA's scan versus a convolutional network


def small_mma() -> MMA:
    model = MMA(num_feat=32, num_block=1, upscale=2, img_range=1.0)
    model.load_state_dict(perturbed_state_dict(canonical_state_dict(model.state_dict()), seed=7, scale=0.1))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BiMamba):
                # delta = softplus(bias) = 0.01, inside mamba_ssm's initial range: the state decays slowly
                # (canonical 0 gives delta 0.69, and the far side's gradient underflows float32).
                for proj in (m.dt_proj, m.dt_proj_b):
                    proj.bias.fill_(math.log(math.expm1(0.01)))
        for block in model.body:
            # Channel attention pools over the whole image: switch it off, so only the scan reaches far.
            last_conv = block.attn.channel_attention.cab[2]
            last_conv.weight.zero_()
            last_conv.bias.zero_()
    return model.eval()


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 12, 3, padding=1), nn.PixelShuffle(2)
    ).eval()


def random_hr(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)


# LR 16 x 24 (HR 32 x 48 at x2). A 4x4 window in the top-left corner covers LR rows/cols 0..2; its far
# side is the LR bottom half, later in raster order, which only the backward scan carries to it. (The
# Mamba layer's 1-D convolution runs over the raster order and so wraps from one row's end to the next
# row's start: it links a few rows, not eight.) The bottom-right window needs the forward scan.
CASES = [
    ((0, 0), (slice(8, None), slice(None)), "x_proj_b"),
    ((28, 44), (slice(0, 8), slice(None)), "x_proj"),
]


@pytest.mark.parametrize("pos,far,direction", CASES, ids=["backward-scan", "forward-scan"])
def test_mma_attribution_reaches_the_far_side(pos, far, direction):
    st = LamSettings(pos=pos, window=4, fold=4, kernel=5)
    hr = random_hr(32, 48)
    model = small_mma()
    result = lam(model, hr, st)
    assert result.map.shape == (16, 24)
    assert result.map[far].max() > 1e-8  # the scan carries the window's dependence across the image
    # Cutting that direction's scan (B = C = 0: only the D skip is left) cuts the far side off exactly.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BiMamba):
                getattr(m, direction).weight.zero_()
    assert lam(model, hr, st).map[far].max() == 0.0


@pytest.mark.parametrize("pos,far", [c[:2] for c in CASES], ids=["top-left", "bottom-right"])
def test_conv_attribution_stays_local(pos, far):
    st = LamSettings(pos=pos, window=4, fold=4, kernel=5)
    result = lam(conv_net(), random_hr(32, 48), st, scale=2)
    assert result.map[far].max() == 0.0
    # Two 3x3 convolutions reach 2 LR pixels beyond the window's LR pixels.
    rows, cols = np.nonzero(result.map)
    lr_h, lr_w = pos[0] // 2, pos[1] // 2
    assert rows.min() >= lr_h - 2 and rows.max() <= lr_h + 4
    assert cols.min() >= lr_w - 2 and cols.max() <= lr_w + 4


# ---------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "pos,window,message",
    [
        ((-1, 0), 4, "outside the 16x48 image"),
        ((0, 45), 4, "W in 0..44"),
        ((13, 0), 4, "H must be in 0..12"),
        ((0, 0), 17, "smaller than the 17x17 window"),
    ],
)
def test_bad_windows_get_one_line(pos, window, message):
    with pytest.raises(SisrError, match=message) as err:
        lam(conv_net(), random_hr(16, 48), LamSettings(pos=pos, window=window, fold=2), scale=2)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs,message",
    [(dict(kernel=4), "odd"), (dict(fold=0), "fold"), (dict(sigma=-1.0), "sigma"), (dict(lr="opencv"), "lr")],
)
def test_bad_settings_get_one_line(kwargs, message):
    with pytest.raises(SisrError, match=message):
        LamSettings(pos=(0, 0), **kwargs)


def test_numpy_positions_are_accepted():
    st = LamSettings(pos=(np.int64(3), np.int32(4)))
    assert st.pos == (3, 4) and type(st.pos[0]) is int
    with pytest.raises(SisrError, match="two integers"):
        LamSettings(pos=(1.5, 2))


def test_crop_to_scale_before_checking():
    # 17 x 49 at x2 is cropped to 16 x 48: a window ending at column 48 fits, one ending at 49 does not.
    hr = random_hr(17, 49)
    assert lam(conv_net(), hr, LamSettings(pos=(12, 44), window=4, fold=2), scale=2).hr.shape == (16, 48, 3)
    with pytest.raises(SisrError, match="outside"):
        lam(conv_net(), hr, LamSettings(pos=(12, 45), window=4, fold=2), scale=2)


def test_matlab_lr_differs_from_pil():
    hr = random_hr(16, 48)
    pil, matlab = make_lr(hr, 2, "pil"), make_lr(hr, 2, "matlab")
    assert pil.shape == matlab.shape == (8, 24, 3) and pil.dtype == matlab.dtype == np.uint8
    assert np.abs(pil.astype(int) - matlab.astype(int)).max() > 0


# ---------------------------------------------------------------------------------------------------------
# The workflow behind `sisr lam`


@pytest.fixture(scope="module")
def hr_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lam") / "hr.png"
    yy, xx = np.mgrid[0:64, 0:72]
    hr = np.stack([(xx * 3) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], axis=2).astype(np.uint8)
    PILImage.fromarray(hr).save(path)
    return path


def test_run_lam_writes_every_file(hr_file, tmp_path, capsys):
    st = LamSettings(pos=(20, 24), window=8, fold=2, kernel=5)
    out, js, mp = tmp_path / "figs", tmp_path / "lam.json", tmp_path / "map.npy"
    results = run_lam(
        hr_file, ["seemore-t-x4", "mma-s-x4"], st, out_dir=out, json_path=js, map_path=mp, batch_size=2
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("seemore-t-x4: DI ") and lines[1].startswith("mma-s-x4: DI ")
    assert "window 8 at (H, W) = (20, 24)" in lines[0] and "fold 2" in lines[0]

    data = json.loads(js.read_text())
    assert [m["model"] for m in data["models"]] == ["seemore-t-x4", "mma-s-x4"]
    for entry, r in zip(data["models"], results, strict=True):
        assert entry["diffusion_index"] == pytest.approx(r.diffusion_index)
        assert entry["gini"] == pytest.approx(r.gini)
        assert entry["diffusion_index"] == pytest.approx((1 - entry["gini"]) * 100)
    assert data["settings"]["pos"] == [20, 24] and data["settings"]["lr"] == "pil"

    for name, r in zip(["seemore-t-x4", "mma-s-x4"], results, strict=True):
        saved = np.load(tmp_path / f"map_{name}.npy")
        assert saved.dtype == np.float32 and saved.shape == (16, 18)
        np.testing.assert_array_equal(saved, r.map)
        for kind in ("map", "kde", "blend"):
            with PILImage.open(out / f"{name}_{kind}.png") as im:
                assert im.size == (72, 64)
    for name in ("window.png", "comparison.png"):
        assert (out / name).is_file()
    assert not mp.exists()  # several models: the names are appended
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary files


def test_map_paths():
    assert map_paths("m.npy", ["a"]) == [Path("m.npy")]
    assert map_paths("d/m.npy", ["a", "b/c.pth"]) == [Path("d/m_a.npy"), Path("d/m_b_c.pth.npy")]


def test_run_lam_bad_input_writes_nothing(hr_file, tmp_path):
    js = tmp_path / "lam.json"
    with pytest.raises(SisrError, match="outside") as err:
        run_lam(hr_file, ["seemore-t-x4"], LamSettings(pos=(60, 0), window=8, fold=2), json_path=js)
    assert "\n" not in str(err.value)
    with pytest.raises(SisrError):
        run_lam(hr_file, ["no-such-model"], LamSettings(pos=(0, 0), window=8, fold=2), json_path=js)
    with pytest.raises(SisrError, match="does not exist") as err:
        st = LamSettings(pos=(0, 0), window=8, fold=2)
        run_lam(hr_file, ["seemore-t-x4"], st, map_path=tmp_path / "no" / "m.npy")
    assert "\n" not in str(err.value)
    assert not js.exists()


def test_parity_tolerance_catches_convention_slips(reference, monkeypatch):
    # Off by one pixel, another bicubic or another border: each moves the map by more than the parity
    # tolerance, so the parity test above pins these conventions down.
    import sisr.analysis.lam as lam_module

    model = seemore_from_fixture(reference)
    h, w = (int(v) for v in reference["positions"][1])  # near the top border
    expected = reference["map"][1]

    def moved(**kwargs: object) -> float:
        st = LamSettings(**{"pos": (h, w), **kwargs})
        return float(np.abs(lam(model, reference["hr"], st, batch_size=25).map - expected).max())

    assert moved(pos=(h + 1, w)) > 1e-2
    assert moved(lr="matlab") > 1e-2
    # Replicate border (aaa|abc) instead of reflect-101 (cba|abc).
    monkeypatch.setattr(lam_module, "_reflect101", lambda n, pad: np.clip(np.arange(-pad, n + pad), 0, n - 1))
    assert moved() > 1e-2


# ---------------------------------------------------------------------------------------------------------
# The command


def test_cli_writes_every_file(hr_file, tmp_path, capsys):
    from sisr.cli import main

    out, js, mp = tmp_path / "figs", tmp_path / "lam.json", tmp_path / "map.npy"
    argv = ["lam", str(hr_file), "-m", "seemore-t-x4", "--pos", "20", "24", "--window", "8", "--fold", "2"]
    argv += ["--kernel", "5", "--lr", "matlab", "--out", str(out), "--json", str(js), "--map", str(mp)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("seemore-t-x4: DI ") and "LR matlab" in captured.out
    data = json.loads(js.read_text())
    assert data["settings"] == {
        "image": str(hr_file),
        "pos": [20, 24],
        "window": 8,
        "sigma": 1.2,
        "fold": 2,
        "kernel": 5,
        "lr": "matlab",
    }
    assert np.load(mp).shape == (16, 18)  # one model: the path as given
    assert sorted(p.name for p in out.iterdir()) == [
        "seemore-t-x4_blend.png",
        "seemore-t-x4_kde.png",
        "seemore-t-x4_map.png",
        "window.png",
    ]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--pos", "60", "0"], "is outside the 64x72 image"),
        (["--pos", "0", "-3"], "is outside the 64x72 image"),
        (["--pos", "0", "0", "--window", "65"], "smaller than the 65x65 window"),
        (["--pos", "0", "0", "--kernel", "4"], "odd"),
    ],
)
def test_cli_bad_position_gets_one_line(hr_file, tmp_path, capsys, extra, message):
    from sisr.cli import main

    js = tmp_path / "lam.json"
    assert main(["lam", str(hr_file), "-m", "seemore-t-x4", "--json", str(js), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sisr: error: ") and message in err and err.count("\n") == 1
    assert not js.exists()


def test_cli_unknown_model_gets_one_line(hr_file, capsys):
    from sisr.cli import main

    assert main(["lam", str(hr_file), "-m", "no-such-model", "--pos", "0", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sisr: error: ") and "no-such-model" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------------------
# Precision


def test_path_gradients_run_the_forward_in_bf16_and_keep_a_float32_gradient():
    # The forward runs under autocast (the convolutions' outputs are bf16), the gradient flows back
    # through autocast's casts to the float32 input, and stays close to the fp32 one.
    from sisr.analysis.lam import path_gradients

    model = conv_net()
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    image = torch.rand(3, 12, 10, generator=torch.Generator().manual_seed(0))
    images, weights = blur_path(image, sigma=1.2, fold=4, kernel=5)

    def objective(sr: torch.Tensor) -> torch.Tensor:
        assert sr.dtype == torch.float32
        return edge_objective(sr, 4, 4, 8)

    ref = path_gradients(model, images, weights, objective, batch_size=3)
    assert seen == [torch.float32, torch.float32]
    seen.clear()
    low = path_gradients(model, images, weights, objective, batch_size=3, precision="bf16")
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert not torch.equal(low, ref)  # bf16 did run
    rel = (low - ref).norm() / ref.norm()
    assert rel < 0.05, rel.item()


@pytest.mark.parametrize(
    "precision,native,message",
    [
        ("fp16", False, "precision fp16 is not supported on cpu"),
        ("bf16", False, "precision bf16 is not supported on cpu"),
        ("fp16", True, "precision fp16 is not allowed for seemore"),  # the device would run it: the gate
    ],
)
def test_cli_refused_precision_gets_one_line(
    hr_file, tmp_path, capsys, monkeypatch, precision, native, message
):
    import sisr.precision
    from sisr.cli import main

    monkeypatch.setattr(sisr.precision, "device_supports", lambda p, d: native or p == "fp32")
    js = tmp_path / "lam.json"
    argv = ["lam", str(hr_file), "-m", "seemore-t-x4", "--pos", "0", "0", "--precision", precision]
    assert main([*argv, "--json", str(js)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sisr: error: ") and message in err and err.count("\n") == 1, err
    assert not js.exists()
