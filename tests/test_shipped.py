"""The models shipped in ``src/sisr/weights``: loading by name, what their files record, that they beat
bicubic on held-out photographs, and the commands that use them (``sisr upscale`` defaults, ``--scale``,
``sisr models``). Model choice by family and scale is also checked on throw-away files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import sisr
from sisr import checkpoint, shipped
from sisr.checkpoint import save_safetensors
from sisr.cli import main
from sisr.data.images import read_image, write_image
from sisr.errors import SisrError
from sisr.heldout import PHOTOS, bicubic_up, degrade_lr, lr_of, mean_quality, measure, measure_each, photo
from sisr.metrics import modcrop, psnr
from sisr.models import arch_of, create_model, scale_of
from sisr.shipped import choose_model, shipped_model_info, shipped_models

pytestmark = pytest.mark.usefixtures("one_thread")

CLEAN = ("mma-s-x2", "mma-s-x4", "seemore-t-x2", "seemore-t-x3", "seemore-t-x4")
REAL = ("seemore-t-x2-real", "seemore-t-x4-real")  # trained on Real-ESRGAN-style degradations
SHIPPED = tuple(sorted(CLEAN + REAL))


def reference_network(name: str) -> torch.nn.Module:
    """The architecture a shipped name promises, freshly initialised."""
    family, scale = name.removesuffix("-real").rsplit("-x", 1)
    if family == "seemore-t":
        return create_model("seemore-t", int(scale))
    assert family == "mma-s"
    return create_model("mma-s", int(scale))


def test_the_shipped_set() -> None:
    assert tuple(shipped_models()) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_by_name_with_its_recorded_history(name: str) -> None:
    model = sisr.load_model(name)
    reference = reference_network(name)
    assert (arch_of(model), scale_of(model)) == (arch_of(reference), scale_of(reference))
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    info = shipped_model_info(name)
    assert info.params == sum(p.numel() for p in reference.parameters())
    if info.arch == "seemore":
        assert info.size < 1_000_000
    else:  # "a small MMA, at most about 1M parameters", float32 like every shipped file
        assert info.params < 1_000_000 and info.size < 4 * info.params + 100_000
    assert not model.training

    training = checkpoint.read_weights(info.path).metadata["training"]
    assert training["weights"] == "EMA"
    assert training["iterations"] == sum(s["iterations"] for s in training["stages"]) > 0
    last = training["stages"][-1]["config"]
    assert last["network_g"]["type"].lower() == info.arch
    assert last["scale"] == info.scale
    assert all(stage["data"]["script"] == "scripts/build_trainset.py" for stage in training["stages"])
    assert info.quality is not None and info.quality["photos"] == list(PHOTOS)


@pytest.mark.parametrize("name", SHIPPED)
def test_beats_bicubic_on_a_held_out_crop(name: str) -> None:
    model = sisr.load_model(name)
    scale = scale_of(model)
    hr = modcrop(photo("astronaut")[40:232, 120:312], scale)  # face, hair, flag: 192 x 192
    lr = lr_of(hr, scale)
    ours = psnr(sisr.upscale(model, lr), hr, crop_border=scale, y_channel=True)
    bicubic = psnr(bicubic_up(lr, scale), hr, crop_border=scale, y_channel=True)
    assert ours > bicubic + 0.5, (ours, bicubic)


@pytest.mark.parametrize("name", REAL)
def test_real_models_beat_bicubic_and_the_clean_model_on_a_held_out_jpeg_crop(name: str) -> None:
    # The LR of a held-out crop saved as a JPEG of quality 75 (what most web photos are, or worse).
    model, clean = sisr.load_model(name), sisr.load_model(name.removesuffix("-real"))
    scale = scale_of(model)
    hr = modcrop(photo("astronaut")[40:232, 120:312], scale)
    lr = degrade_lr(lr_of(hr, scale), "jpeg75", photo_name="astronaut")
    ours = psnr(sisr.upscale(model, lr), hr, crop_border=scale, y_channel=True)
    bicubic = psnr(bicubic_up(lr, scale), hr, crop_border=scale, y_channel=True)
    trained_clean = psnr(sisr.upscale(clean, lr), hr, crop_border=scale, y_channel=True)
    assert ours > bicubic + 0.3 and ours > trained_clean, (ours, bicubic, trained_clean)
    # Its file says how its inputs were made.
    training = checkpoint.read_weights(shipped_model_info(name).path).metadata["training"]
    degradation = training["stages"][-1]["config"]["datasets"]["train"]["degradation"]
    assert degradation["jpeg_range2"] and degradation["gt_usm"] is False


@pytest.mark.parametrize("name", ["seemore-t-x4", "mma-s-x4"])
def test_recorded_quality_is_what_is_measured(name: str) -> None:
    info = shipped_model_info(name)
    measured = measure(sisr.load_model(name), info.scale).as_dict()
    recorded = dict(info.quality)
    assert measured.pop("photos") == recorded.pop("photos") == list(PHOTOS)
    assert measured == pytest.approx(recorded, abs=1e-4)


def test_per_photograph_scores_and_their_mean() -> None:
    model = sisr.load_model("seemore-t-x4")
    each = measure_each(model, 4, ["chelsea", "rocket"])
    assert [q.photos for q in each] == [("chelsea",), ("rocket",)]
    hr = modcrop(photo("rocket"), 4)
    assert each[1].bicubic_psnr_y == psnr(bicubic_up(lr_of(hr, 4), 4), hr, crop_border=4, y_channel=True)
    whole = measure(model, 4, ["chelsea", "rocket"])
    assert whole.photos == ("chelsea", "rocket")
    assert whole.psnr_y == pytest.approx((each[0].psnr_y + each[1].psnr_y) / 2, abs=1e-12)
    assert whole.bicubic_ssim_y == pytest.approx((each[0].bicubic_ssim_y + each[1].bicubic_ssim_y) / 2)
    with pytest.raises(ValueError, match="one scale"):
        mean_quality([each[0], dataclasses.replace(each[1], scale=2)])


# ----------------------------------------------------------------------------------------------------
# The commands


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    write_image(path, np.ascontiguousarray(photo("chelsea")[80:128, 200:256]))
    return path


def test_upscale_defaults_to_seemore_t_x4_beside_the_input(
    image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["upscale", str(image)]) == 0
    out = image.with_name("cat_x4.png")
    assert capsys.readouterr().out == f"{image} -> {out} (x4, seemore-t-x4)\n"
    expected = sisr.upscale(sisr.load_model("seemore-t-x4"), read_image(image).pixels)
    np.testing.assert_array_equal(read_image(out).pixels, expected)


@pytest.mark.parametrize(
    ("argv", "model"),
    [
        (["--scale", "2"], "seemore-t-x2"),
        (["-s", "3"], "seemore-t-x3"),
        (["-m", "mma-s", "-s", "2"], "mma-s-x2"),
    ],
)
def test_scale_picks_the_model_of_the_family(
    image: Path, tmp_path: Path, argv: list[str], model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image), "-o", str(out), *argv]) == 0
    assert capsys.readouterr().out.endswith(f"({model[-2:]}, {model})\n")
    assert read_image(out).pixels.shape == (48 * int(model[-1]), 56 * int(model[-1]), 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-m", "seemore-t-x4", "-s", "2"], "seemore-t-x4 upscales x4, not x2 (--scale)"),
        (["-m", "mma-s", "-s", "3"], "no shipped mma-s model for x3 (shipped: x2, x4)"),
        (["-m", "seemore-q"], "unknown model 'seemore-q': not a file, nor a shipped model (mma-s-x2"),
    ],
)
def test_model_and_scale_errors(
    image: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(image.parent.iterdir())
    assert main(["upscale", str(image), *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"sisr: error: {message}") and captured.err.count("\n") == 1
    assert sorted(image.parent.iterdir()) == before


def test_several_inputs_need_an_output_folder(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upscale", str(image), str(image.parent)]) == 1
    assert capsys.readouterr().err == "sisr: error: several inputs or a folder need -o OUTPUT_FOLDER\n"


def test_models_lists_every_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "name",
        "arch",
        "scale",
        "params",
        "size",
        "iterations",
        "PSNR-Y",
        "bicubic",
        "gain",
    ]
    rows = {line.split()[0]: line for line in lines[1 : 1 + len(SHIPPED)]}
    assert tuple(rows) == SHIPPED
    assert "(default)" in rows["seemore-t-x4"]
    for name, line in rows.items():
        info = shipped_model_info(name)
        q = info.quality
        assert f"{info.params:,}" in line and f"x{info.scale}" in line
        assert line.endswith(f"{q['psnr_y'] - q['bicubic_psnr_y']:+.2f} dB")
    assert lines[-1].startswith("PSNR-Y: mean over held-out photographs (astronaut, chelsea")


# ----------------------------------------------------------------------------------------------------
# Choosing a model by family and scale, on throw-away files


@pytest.fixture
def fake_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    for scale in (2, 4):
        net = create_model("seemore-t", scale)
        save_safetensors(
            tmp_path / f"tiny-x{scale}.safetensors",
            arch="seemore",
            args={"scale": scale, "num_layers": 6, "embedding_dim": 36},
            params=net.state_dict(),
        )
    return tmp_path


def test_choose_model(fake_weights: Path) -> None:
    assert tuple(shipped_models()) == ("tiny-x2", "tiny-x4")
    assert choose_model("tiny", None) == "tiny-x4"
    assert choose_model("tiny", 2) == "tiny-x2"
    assert choose_model("tiny-x2", 4) == "tiny-x2"  # full names are kept; the caller checks the scale
    assert choose_model("other", 2) == "other"  # neither family nor file: load_model reports it
    with pytest.raises(SisrError, match=r"no shipped tiny model for x3 \(shipped: x2, x4\)"):
        choose_model("tiny", 3)
    with pytest.raises(SisrError, match="no shipped seemore-t model for x4"):
        choose_model(None, None)  # the default family, which these files do not have
    info = shipped_model_info("tiny-x2")
    assert (info.arch, info.scale, info.iterations, info.quality) == ("seemore", 2, None, None)
    with pytest.raises(SisrError, match="unknown model 'tiny'; shipped: tiny-x2, tiny-x4"):
        shipped_model_info("tiny")


def test_real_picks_the_family_s_real_world_model(fake_weights: Path) -> None:
    net = create_model("seemore-t", 4)
    save_safetensors(
        fake_weights / "tiny-x4-real.safetensors",
        arch="seemore",
        args={"scale": 4, "num_layers": 6, "embedding_dim": 36},
        params=net.state_dict(),
    )
    assert tuple(shipped_models()) == ("tiny-x2", "tiny-x4", "tiny-x4-real")
    assert choose_model("tiny", None) == "tiny-x4"  # -real only when asked for
    assert choose_model("tiny", 4, real=True) == "tiny-x4-real"
    with pytest.raises(
        SisrError, match=r"no shipped real-world tiny model for x2 \(shipped real-world: x4\)"
    ):
        choose_model("tiny", 2, real=True)
    with pytest.raises(
        SisrError, match=r"--real picks a family's real-world model; tiny-x4 is a model itself"
    ):
        choose_model("tiny-x4", None, real=True)
    assert shipped_model_info("tiny-x4-real").scale == 4


def test_the_bundled_example_is_a_held_out_photograph_reduced_4x() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "chelsea.png"
    expected = lr_of(modcrop(photo("chelsea"), 4), 4)
    np.testing.assert_array_equal(read_image(example).pixels, expected)
    assert expected.shape == (75, 112, 3)
