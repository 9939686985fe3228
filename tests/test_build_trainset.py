"""scripts/build_trainset.py (helpers, offline modes; never its apt-get download) and export stages."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from skimage import data

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_trainset.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_trainset", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_trainset"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


bt = _load()

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: 2014 Everyone
License: GPL-2+

Files: nature/Aqua.jpg
       nature/Lady?ird.jpg
Copyright: 2008, Charles Barbin
           2009, Someone Else
License: CC-BY-SA-4.0
 Long license text
 .
 more text

Files: desktop/Stripes-*.png
Copyright: 2014 Adam Erdman
License: GPL-3

Files: debian/*
Copyright: 2014, Packager
License: MIT

License: GPL-2+
 The GPL.
"""


# ----------------------------------------------------------------------------------------------------
# Copyright files
# ----------------------------------------------------------------------------------------------------


def test_parse_dep5_reads_files_paragraphs() -> None:
    paragraphs = bt.parse_dep5(DEP5)
    assert [p.license for p in paragraphs] == ["GPL-2+", "CC-BY-SA-4.0", "GPL-3", "MIT"]
    assert paragraphs[1].patterns == ("nature/Aqua.jpg", "nature/Lady?ird.jpg")
    assert paragraphs[1].copyright == ("2008, Charles Barbin", "2009, Someone Else")


def test_parse_dep5_rejects_free_form_copyright_files() -> None:
    text = "This package was debianized by someone.\n\nCopyright:\n    Copyright 2016 Helena\n"
    assert bt.parse_dep5(text) is None


@pytest.mark.parametrize(
    ("path", "license_"),
    [
        ("usr/share/backgrounds/mate/nature/Aqua.jpg", "CC-BY-SA-4.0"),  # source path is a tail
        ("usr/share/backgrounds/mate/nature/LadyBird.jpg", "CC-BY-SA-4.0"),  # "?" is one character
        ("usr/share/backgrounds/mate/nature/LadyBBird.jpg", "GPL-2+"),
        ("usr/share/backgrounds/mate/nature/XAqua.jpg", "GPL-2+"),  # tails start after a "/"
        ("usr/share/backgrounds/mate/desktop/Stripes-Dark.png", "GPL-3"),  # last match wins over "*"
        ("usr/share/backgrounds/mate/other/Stripes-Dark.png", "GPL-2+"),
        ("usr/share/doc/demo/debian/changelog", "GPL-2+"),  # debian/* describes packaging only
    ],
)
def test_dep5_lookup(path: str, license_: str) -> None:
    para = bt.dep5_lookup(bt.parse_dep5(DEP5), path)
    assert para is not None and para.license == license_


def test_dep5_lookup_star_crosses_folders_and_no_match_is_none() -> None:
    text = "Format: x\n\nFiles: wallpapers/*\nCopyright: A\nLicense: LGPL-3\n"
    paragraphs = bt.parse_dep5(text)
    assert bt.dep5_lookup(paragraphs, "usr/share/wallpapers/Kay/contents/images/1x1.png").license == "LGPL-3"
    assert bt.dep5_lookup(paragraphs, "usr/share/backgrounds/a.png") is None


def test_dep5_lookup_falls_back_to_the_file_name_when_the_source_folder_was_dropped() -> None:
    text = (
        "Format: x\n\nFiles: *\nCopyright: P\nLicense: Expat\n\n"
        "Files: 16.04/Bridge_by_S.jpg\nCopyright: S\nLicense: CC-BY-SA-4.0\n\n"
        "Files: 16.04/*.png\nCopyright: T\nLicense: CC0-1.0\n"
    )
    paragraphs = bt.parse_dep5(text)
    # "*" matches first, so the fallback is not needed (and not used) there.
    assert bt.dep5_lookup(paragraphs, "usr/share/backgrounds/Bridge_by_S.jpg").license == "Expat"
    no_star = bt.parse_dep5(text.replace("Files: *\nCopyright: P\nLicense: Expat\n\n", ""))
    assert bt.dep5_lookup(no_star, "usr/share/backgrounds/Bridge_by_S.jpg").license == "CC-BY-SA-4.0"
    # Wildcard patterns are not matched by file name alone.
    assert bt.dep5_lookup(no_star, "usr/share/backgrounds/x.png") is None


# ----------------------------------------------------------------------------------------------------
# Candidates and names
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("usr/share/wallpapers/Kay/contents/images/5120x2880.png", "Kay"),
        ("usr/share/wallpapers/Kay/contents/images_dark/5120x2880.png", "Kay_dark"),
        ("usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg", "Elephants"),
        ("usr/share/backgrounds/mate/nature/Aqua.jpg", "Aqua"),
        ("usr/share/backgrounds/gnome/wood-d.webp", "wood-d"),
    ],
)
def test_wallpaper_name(path: str, name: str) -> None:
    assert bt.wallpaper_name(path) == name


def _save(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def test_collect_candidates_keeps_the_largest_real_file(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    images = root / "usr/share/wallpapers/Path/contents/images"
    _save(images / "64x40.jpg", (64, 40))
    _save(images / "32x20.jpg", (32, 20))
    (images / "800x600.jpg").symlink_to("64x40.jpg")  # sorts after 64x40 and would tie on size
    _save(root / "usr/share/wallpapers/Path/contents/images_dark/48x30.png", (48, 30))
    _save(root / "usr/share/wallpapers/Path/contents/screenshot.png", (16, 10))
    _save(root / "usr/share/backgrounds/mate/abstract/Ele_30x20.jpg", (30, 20))
    _save(root / "usr/share/backgrounds/mate/abstract/Ele.jpg", (15, 10))
    _save(root / "usr/share/doc/pkg/logo.png", (8, 8))
    (root / "usr/share/backgrounds/mate/abstract/vector.svg").write_text("<svg/>")
    (root / "usr/share/backgrounds/mate/abstract/broken.png").write_bytes(b"not a png")
    package = bt.Package("pkg", "1.0", root, "")

    candidates, unreadable = bt.collect_candidates(package)

    by_name = {c.name: c for c in candidates}
    assert sorted(by_name) == ["Ele", "Path", "Path_dark"]
    assert by_name["Path"].path.endswith("images/64x40.jpg")
    assert by_name["Path"].group == ("usr/share/wallpapers/Path/contents/images/32x20.jpg",)
    assert by_name["Ele"].path.endswith("Ele_30x20.jpg")
    assert [path for path, _ in unreadable] == ["usr/share/backgrounds/mate/abstract/broken.png"]


def test_plasma_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "usr/share/wallpapers/Altai"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(
        '{"KPlugin": {"License": "CC-BY-SA-4.0", "Name": "Altai",'
        ' "Authors": [{"Name": "Alesya Khoteeva", "Email": "a@b.c"}]}}'
    )
    meta = bt.plasma_metadata(tmp_path, "usr/share/wallpapers/Altai/contents/images/5120x2880.png")
    assert meta == bt.UpstreamMetadata("CC-BY-SA-4.0", ("Alesya Khoteeva <a@b.c>",), "Altai")
    assert bt.plasma_metadata(tmp_path, "usr/share/backgrounds/gnome/a.webp") is None


def test_licensing_prefers_upstream_metadata_over_the_copyright_file(tmp_path: Path) -> None:
    folder = tmp_path / "usr/share/wallpapers/Path"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text('{"KPlugin": {"License": "LGPLv3", "Authors": [{"Name": "R S"}]}}')
    package = bt.Package("demo", "1.0", tmp_path, DEP5)

    plasma = bt.licensing(package, "usr/share/wallpapers/Path/contents/images/2560x1600.jpg")
    assert (plasma.license, plasma.copyright) == ("LGPLv3", ("R S",))
    assert (plasma.debian_copyright_license, plasma.debian_copyright_holders) == (
        "GPL-2+",
        ("2014 Everyone",),
    )

    mate = bt.licensing(package, "usr/share/backgrounds/mate/nature/Aqua.jpg")
    assert mate.upstream_metadata is None
    assert (mate.license, mate.copyright) == ("CC-BY-SA-4.0", ("2008, Charles Barbin", "2009, Someone Else"))

    free_form = bt.licensing(bt.Package("gnome", "43", tmp_path, "Copyright: someone\n"), "a/b.webp")
    assert free_form.license.startswith("unknown: not machine-readable") and free_form.copyright == ()


# ----------------------------------------------------------------------------------------------------
# Photograph or illustration
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])
def test_photographs_are_kept(name: str) -> None:
    photo = Image.fromarray(getattr(data, name)())
    keep, reason = bt.classify(bt.image_features(photo))
    assert keep, reason


def _illustration() -> Image.Image:
    """Flat-shaded shapes on a smooth gradient, like a vector wallpaper."""
    y, x = np.mgrid[:600, :900]
    img = np.zeros((600, 900, 3), np.uint8)
    img[..., 2] = (x * 255 // 899).astype(np.uint8)  # horizontal gradient: one step every ~3.5 px
    img[100:300, 200:500] = (230, 120, 20)
    img[(y - 400) ** 2 + (x - 650) ** 2 < 120**2] = (40, 200, 90)
    return Image.fromarray(img)


def test_flat_illustration_is_dropped() -> None:
    features = bt.image_features(_illustration())
    assert features.flat_fraction > 0.5
    keep, reason = bt.classify(features)
    assert not keep and "flat pixels" in reason


def test_two_tone_texture_is_dropped_for_its_few_colours() -> None:
    # A fine checkerboard has no flat pixels at all but only two colours.
    y, x = np.mgrid[:300, :300]
    img = np.where(((y // 1 + x // 1) % 2 == 0)[..., None], [200, 30, 30], [30, 30, 200]).astype(np.uint8)
    features = bt.image_features(Image.fromarray(img))
    assert features.flat_fraction == 0.0 and features.colours == 2
    keep, reason = bt.classify(features)
    assert not keep and "colours" in reason


def test_white_noise_is_dropped_as_synthetic_texture() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    features = bt.image_features(Image.fromarray(noise))
    assert features.median_laplacian > 30
    keep, reason = bt.classify(features)
    assert not keep and "Laplacian" in reason


def test_features_are_measured_on_a_downscaled_copy() -> None:
    # Doubling a photo by pixel repetition creates flat pixel pairs; measuring at <= 512 px undoes it.
    photo = Image.fromarray(data.chelsea())
    doubled = photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.NEAREST)
    full = bt.image_features(doubled, size=10_000)
    small = bt.image_features(doubled, size=max(photo.size))
    assert full.flat_fraction > 2 * small.flat_fraction
    assert small.flat_fraction == pytest.approx(bt.image_features(photo).flat_fraction, abs=0.02)


def test_allow_and_deny_lists_override_the_features() -> None:
    photo = bt.image_features(Image.fromarray(data.coffee()))
    flat = bt.image_features(_illustration())
    assert bt.classify(photo, next(iter(bt.DENY)))[0] is False
    assert bt.classify(flat, next(iter(bt.ALLOW)))[0] is True
    assert bt.classify(photo, "not-listed")[0] is True


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "name", "stem"),
    [
        ("plasma-workspace-wallpapers", "Path", "plasma_Path"),
        ("plasma-workspace-wallpapers", "Kay_dark", "plasma_Kay_dark"),
        ("mate-backgrounds", "Lady Bird (2)", "mate_Lady_Bird_2"),
        ("mate-backgrounds", "Flower2", "mate_Flower2"),
        ("mate-backgrounds", "box2", "mate_box2_"),  # sisr.prepare would strip the "x2" of "box2"
        ("mate-backgrounds", "Shot_x2", "mate_Shot_x2_"),  # a trailing x2 would be read as a scale
    ],
)
def test_output_stem(package: str, name: str, stem: str) -> None:
    assert bt.output_stem(package, name) == stem


@pytest.mark.parametrize(
    ("size", "expected"),
    [((2560, 1600), (2304, 1440)), ((1600, 2560), (1440, 2304)), ((1000, 700), (1000, 700))],
)
def test_shrink(size: tuple[int, int], expected: tuple[int, int]) -> None:
    image = Image.new("RGBA", size, (1, 2, 3, 4))
    out = bt.shrink(image, 1440)
    assert out.size == expected and out.mode == "RGB"


def test_contact_sheet_places_thumbnails() -> None:
    red = Image.new("RGB", (480, 300), (255, 0, 0))
    sheet = bt.contact_sheet([(red, "a"), (red, "b")], columns=3, cell=(240, 150))
    assert sheet.size == (720, 164)
    pixels = np.asarray(sheet)
    assert tuple(pixels[100, 100]) == (255, 0, 0) and tuple(pixels[100, 600]) == (255, 255, 255)


def test_refuses_to_run_in_ci(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not run anything in CI")

    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(bt, "build", forbidden)
    monkeypatch.setattr(bt.subprocess, "run", forbidden)
    assert bt.main(["--work", os.devnull, "--out", os.devnull]) == 2
    assert "refusing to run in CI" in capsys.readouterr().err


def test_scaled_copies_are_named_by_percent_and_skip_small_ones() -> None:
    image = Image.new("RGB", (1000, 600), (10, 20, 30))
    copies = bt.scaled_copies(image, "mate_Dune", [0.75, 0.5], min_side=400)
    assert [(name, im.size) for name, im in copies] == [("mate_Dune_scale075.png", (750, 450))]


def test_hard_subimages_lists_those_bicubic_restores_worst(tmp_path: Path) -> None:
    from sisr.data.datasets import read_meta_info
    from sisr.prepare import make_lr

    rng = np.random.default_rng(0)
    hr_dir = tmp_path / "hr_sub"
    hr_dir.mkdir()
    ramp = np.linspace(0, 255, 48)[None, :, None].repeat(48, 0).repeat(3, 2)
    images = {
        "a_smooth.png": ramp,
        "b_texture.png": rng.integers(0, 256, (48, 48, 3)),
        "c_smooth.png": 255 - ramp,
        "d_texture.png": rng.integers(64, 192, (48, 48, 3)),
    }
    for name, pixels in images.items():
        Image.fromarray(pixels.astype(np.uint8)).save(hr_dir / name)
    make_lr(hr_dir, tmp_path / "lr_sub", [4], workers=1)

    hard = bt.hard_subimages(hr_dir, tmp_path / "lr_sub" / "X4", scale=4, fraction=0.5)
    assert [name for name, _ in hard] == ["b_texture.png", "d_texture.png"]
    smooth = bt.bicubic_psnr(hr_dir / "a_smooth.png", tmp_path / "lr_sub" / "X4" / "a_smoothx4.png", 4)
    assert all(score < smooth - 10 for _, score in hard)

    bt.write_meta_info(tmp_path / "meta_info.txt", [name for name, _ in hard], 48)
    assert (tmp_path / "meta_info.txt").read_text().splitlines()[0] == "b_texture.png (48,48,3)"
    assert read_meta_info(tmp_path / "meta_info.txt") == ["b_texture.png", "d_texture.png"]
    with pytest.raises(ValueError, match="fraction"):
        bt.hard_subimages(hr_dir, tmp_path / "lr_sub" / "X4", scale=4, fraction=0.0)


def test_workers_option_reaches_the_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_build(**kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        return {"kept": 0, "dropped": 0, "subimages": 0, "lr_images": 0, "licenses": []}

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(bt, "build", fake_build)
    assert bt.main(["--work", "w", "--out", "o", "--workers", "3"]) == 0
    assert seen["workers"] == 3 and seen["photos_only"] is False
    assert bt.main(["--work", "w", "--out", "o", "--photos-only"]) == 0
    assert seen["photos_only"] is True
    seen.clear()
    with pytest.raises(SystemExit):
        bt.main(["--pack", "b", "--out", "o", "--photos-only"])
    assert seen == {}
    assert bt.main(["--work", "w", "--out", "o"]) == 0
    assert seen["workers"] == 1
    seen.clear()
    with pytest.raises(SystemExit):
        bt.main(["--work", "w", "--out", "o", "--workers", "0"])
    assert seen == {}


# ----------------------------------------------------------------------------------------------------
# Carrying the set: --pack and --from-photos
# ----------------------------------------------------------------------------------------------------


def _built_set(root: Path) -> Path:
    """A folder as build() leaves it: two kept photographs in hr/ (one _scale copy), one dropped."""
    (root / "hr").mkdir(parents=True)
    (root / "licenses").mkdir()
    (root / "licenses" / "demo.copyright").write_text(DEP5)
    images = []
    for stem, pixels in (
        ("demo_Coffee", data.coffee()[:160, :200]),
        ("demo_Chelsea", data.chelsea()[:128, :176]),
    ):
        Image.fromarray(pixels).save(root / "hr" / f"{stem}.png")
        images.append({"name": stem, "kept": True, "output": f"hr/{stem}.png", "scaled_outputs": []})
        Image.fromarray(pixels).resize((150, 120)).save(root / "hr" / f"{stem}_scale075.png")
    images.append({"name": "Render", "kept": False, "output": None, "scaled_outputs": []})
    manifest = {
        "description": bt.DESCRIPTION,
        "kept": 2,
        "dropped": 1,
        "scales": [0.75],
        "licenses": ["GPL-2+"],
        "images": images,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_photos_only_build_is_enough_for_a_pack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "usr/share/backgrounds/demo").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(root / "usr/share/backgrounds/demo/Astro.jpg", quality=98)
    package = bt.Package("demo-backgrounds", "1.0", root, DEP5)
    monkeypatch.setattr(bt, "download_packages", lambda names, work: [package])
    out = tmp_path / "built"
    manifest = bt.build(
        packages=["demo-backgrounds"],
        work=tmp_path / "work",
        out=out,
        max_short_side=1440,
        scales=[0.5],
        crop_size=256,
        step=128,
        hard_fraction=0.3,
        photos_only=True,
    )
    assert manifest["kept"] == 1 and "subimages" not in manifest
    assert sorted(p.name for p in (out / "hr").iterdir()) == ["demo_Astro.png", "demo_Astro_scale050.png"]
    assert not (out / "hr_sub").exists() and not (out / "meta_info_hard.txt").exists()
    packed = bt.pack(out, tmp_path / "pack")
    assert packed["packed"]["photographs"] == 1
    assert sorted(p.name for p in (tmp_path / "pack").glob("*.jpg")) == ["demo_Astro.jpg"]


def test_pack_writes_the_kept_photographs_as_jpeg_and_from_photos_rebuilds_the_set(tmp_path: Path) -> None:
    from sisr.data.datasets import read_meta_info
    from sisr.metrics import psnr

    built = _built_set(tmp_path / "built")
    packed = bt.pack(built, tmp_path / "pack", quality=95)
    assert sorted(p.name for p in (tmp_path / "pack").glob("*.jpg")) == [
        "demo_Chelsea.jpg",
        "demo_Coffee.jpg",
    ]
    assert packed["packed"] == {"photographs": 2, "format": "JPEG", "quality": 95, "subsampling": "4:4:4"}
    assert (tmp_path / "pack" / "licenses" / "demo.copyright").read_text() == DEP5
    with Image.open(tmp_path / "pack" / "demo_Coffee.jpg") as im:
        assert im.format == "JPEG" and im.size == (200, 160)
        # 4:4:4: every chroma component has the luma's sampling factors (Pillow's layer entries).
        assert {layer[1:3] for layer in im.layer} == {(1, 1)}
        decoded = np.asarray(im.convert("RGB"))
    assert psnr(decoded, data.coffee()[:160, :200], crop_border=0) > 38

    out = tmp_path / "out"
    manifest = bt.build_from_photos(
        tmp_path / "pack", out, scales=None, crop_size=48, step=24, hard_fraction=0.5, workers=1
    )
    # The pack's photographs, decoded, and their _scale copies made again at the pack's scales.
    assert sorted(p.name for p in (out / "hr").iterdir()) == [
        "demo_Chelsea.png",
        "demo_Chelsea_scale075.png",
        "demo_Coffee.png",
        "demo_Coffee_scale075.png",
    ]
    assert np.array_equal(np.asarray(Image.open(out / "hr" / "demo_Coffee.png")), decoded)
    assert Image.open(out / "hr" / "demo_Coffee_scale075.png").size == (150, 120)
    subs = sorted(p.name for p in (out / "hr_sub").iterdir())
    assert manifest["subimages"] == len(subs) > 0
    for scale in (2, 3, 4):
        assert len(list((out / "lr_sub" / f"X{scale}").iterdir())) == len(subs)
    hard = read_meta_info(out / "meta_info_hard.txt")
    assert len(hard) == manifest["hard_subimages"] == round(0.5 * len(subs)) and set(hard) <= set(subs)
    assert manifest["description"] == f"{bt.DESCRIPTION}, built from a pack of JPEG q95 photographs"
    assert manifest["scales"] == [0.75] and manifest["crop_size"] == 48
    assert json.loads((out / "manifest.json").read_text()) == manifest
    record = next(r for r in manifest["images"] if r["name"] == "demo_Coffee")
    assert record["scaled_outputs"] == ["hr/demo_Coffee_scale075.png"]

    # The command line, in CI (no download), with a pool of 2: the same set as in one process.
    env = {**os.environ, "CI": "true"}
    again = tmp_path / "again"
    cmd = [sys.executable, str(_SCRIPT), "--from-photos", str(tmp_path / "pack"), "--out", str(again)]
    tail = [
        "--crop-size",
        "48",
        "--step",
        "24",
        "--hard-fraction",
        "0.5",
        "--workers",
        "2",
        "--lr-scales",
        "4",
    ]
    done = subprocess.run(cmd + tail, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (again / "meta_info_hard.txt").read_text() == (out / "meta_info_hard.txt").read_text()
    assert sorted(p.name for p in (again / "lr_sub").iterdir()) == ["X4"]
    assert json.loads((again / "manifest.json").read_text())["lr_scales"] == [4] and manifest[
        "lr_scales"
    ] == [2, 3, 4]
    for name in subs:
        assert (again / "hr_sub" / name).read_bytes() == (out / "hr_sub" / name).read_bytes()

    # A pack cut short (here by a photograph gone missing) has no manifest, so it is never taken for one.
    (built / "hr" / "demo_Coffee.png").unlink()
    with pytest.raises(OSError):
        bt.pack(built, tmp_path / "pack")
    assert not (tmp_path / "pack" / "manifest.json").exists()
    assert not [p for p in (tmp_path / "pack").iterdir() if p.name.endswith(".tmp")]
    # LR scales without 4, and a folder that is not a pack: one line, exit 1.
    no4 = subprocess.run([*cmd, "--lr-scales", "2", "3"], env=env, capture_output=True, text=True)
    assert no4.returncode == 2 and "Traceback" not in no4.stderr
    assert (
        no4.stderr.strip()
        .splitlines()[-1]
        .endswith("error: --lr-scales [2, 3] lacks 4, which ranks the sub-images by difficulty")
    )
    bad = subprocess.run(
        [*cmd[:3], str(built), "--out", str(tmp_path / "x")], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        f"build_trainset: error: {built / 'manifest.json'} is not a pack's manifest (no 'packed' entry)"
    ]


@pytest.mark.slow
def test_device_script_builds_trains_every_run_and_archives_them(tmp_path: Path) -> None:
    """scripts/device_train.sh on the CPU: a pack of two photographs, two iterations of each run."""
    import tarfile

    import torch

    built = tmp_path / "built"
    (built / "hr").mkdir(parents=True)
    (built / "licenses").mkdir()
    images = []
    for stem, pixels in (("demo_Astronaut", data.astronaut()), ("demo_Coffee", data.coffee()[:, :512])):
        Image.fromarray(pixels).save(built / "hr" / f"{stem}.png")
        images.append({"name": stem, "kept": True, "output": f"hr/{stem}.png", "scaled_outputs": []})
    manifest = {
        "description": bt.DESCRIPTION,
        "kept": 2,
        "scales": [],
        "licenses": ["GPL-2+"],
        "images": images,
    }
    (built / "manifest.json").write_text(json.dumps(manifest))
    bt.pack(built, tmp_path / "pack")

    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "DEVICE": "cpu",
        "PYTHON": sys.executable,
        "PACK": str(tmp_path / "pack"),
        "SET": str(tmp_path / "set"),
        "VAL": str(tmp_path / "val"),
        "EXPERIMENTS": str(tmp_path / "experiments"),
        "BUILD_ARGS": "--crop-size 256 --step 256",
        "BUILD_WORKERS": "2",
        "BUDGET": "600",
        "WARMUP": "1",
        **{f"ITERS_{run}": "3" for run in ("X4_REAL", "X2_REAL", "X4")},
        **{f"BATCH_{run}": "1" for run in ("X4_REAL", "X2_REAL", "X4")},
        **{f"WORKERS_{run}": "0" for run in ("X4_REAL", "X2_REAL", "X4")},
    }
    script = _SCRIPT.parent / "device_train.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "build.log",
        "gpu_x2_real.tar.gz",
        "gpu_x4.tar.gz",
        "gpu_x4_real.tar.gz",
        "machine.txt",
        "manifest.json",
    ]
    # 2x2 sub-images of 256 from each of 512x512 and 400x512 (the last row flush with the edge).
    assert json.loads((out / "manifest.json").read_text())["subimages"] == 4 + 4
    for run, arch_scale, start in (
        ("x4_real", 4, "seemore-t-x4-real"),
        ("x2_real", 2, "seemore-t-x2-real"),
        ("x4", 4, "seemore-t-x4"),
    ):
        with tarfile.open(out / f"gpu_{run}.tar.gz") as tar:
            names = sorted(tar.getnames())
            assert names == [
                f"gpu_{run}/{f}" for f in ("config.yml", "log.jsonl", "models/net_g_latest.pth", "train.log")
            ]
            tar.extractall(tmp_path / "unpacked", filter="data")
        ckpt = torch.load(
            tmp_path / "unpacked" / f"gpu_{run}" / "models" / "net_g_latest.pth", weights_only=True
        )
        assert ckpt["step"] == 3 and ckpt["args"]["scale"] == arch_scale
        assert ckpt["hardware"][0]["device"] == "cpu"
        config = ckpt["config"]
        assert config["path"]["pretrain_network_g"] == f"src/sisr/weights/{start}.safetensors"
        assert config["datasets"]["train"]["dataroot_gt"] == str(tmp_path / "set" / "hr_sub")


def test_export_records_each_runs_hardware_and_training_set(tmp_path: Path) -> None:
    """scripts/export_model.py's stage record of a run: iterations, config, hardware, the set's summary."""
    import yaml

    from sisr.checkpoint import save_checkpoint

    spec = importlib.util.spec_from_file_location("export_model", _SCRIPT.parent / "export_model.py")
    assert spec is not None and spec.loader is not None
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)

    built = _built_set(tmp_path / "set")
    exp = tmp_path / "gpu_x4_real"
    (exp / "models").mkdir(parents=True)
    config = {"name": "gpu_x4_real", "datasets": {"train": {"dataroot_gt": str(built / "hr_sub")}}}
    (exp / "config.yml").write_text(yaml.safe_dump(config))
    ran_on = [
        {"from_iteration": 0, "processes": 1, "device": "cuda", "name": "NVIDIA H200", "torch": "2.11.0"}
    ]
    args = {"scale": 4, "num_layers": 1, "embedding_dim": 8}
    save_checkpoint(
        exp / "models" / "net_g_latest.pth", arch="seemore", args=args, params={}, step=7, hardware=ran_on
    )
    stage = export._stage(str(exp))
    assert stage["iterations"] == 7 and stage["config"] == config and stage["hardware"] == ran_on
    assert stage["data"] == {
        "description": bt.DESCRIPTION,
        "kept": 2,
        "scales": [0.75],
        "licenses": ["GPL-2+"],
    }
