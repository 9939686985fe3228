"""Tests for sisr.prepare: LR generation, sub-image tiling, LMDB packing and the ``sisr prepare`` CLI."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from sisr.cli import main as sisr_main
from sisr.errors import SisrError
from sisr.imresize import imresize
from sisr.prepare import PrepareWarning, extract_subimages, make_lmdb, make_lr, tile_positions


def main(argv: list[str]) -> int:
    """``sisr prepare ARGV...``, in-process."""
    return sisr_main(["prepare", *argv])


def _save(folder: Path, name: str, pixels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture
def hr_dir(tmp_path: Path) -> Path:
    """Two RGB photos and a gray one, sizes not multiples of 2, 3 or 4."""
    folder = tmp_path / "hr"
    _save(folder, "0001.png", np.ascontiguousarray(data.astronaut()[90:161, 170:255]))  # 71x85
    _save(folder, "0002.png", np.ascontiguousarray(data.chelsea()[40:107, 100:197]))  # 67x97
    _save(folder, "0003.png", np.ascontiguousarray(data.camera()[100:173, 200:279]))  # 73x79 gray
    return folder


def _no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------------
# LR images
# ----------------------------------------------------------------------------------------------------


def test_make_lr_writes_matlab_bicubic_of_the_modcropped_hr(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lr"
    summary = make_lr(hr_dir, out, [2, 3, 4])
    assert (summary.images, summary.written) == (3, 9)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        f"X{s}/{n}x{s}.png" for s in (2, 3, 4) for n in ("0001", "0002", "0003")
    ]
    for s in (2, 3, 4):
        for name in ("0001", "0002", "0003"):
            hr = _load(hr_dir / f"{name}.png")
            lr = _load(out / f"X{s}" / f"{name}x{s}.png")
            h, w = hr.shape[0] // s * s, hr.shape[1] // s * s
            assert lr.shape == (h // s, w // s, *hr.shape[2:])  # gray stays gray
            expected = imresize(hr[:h, :w].astype(np.float64) / 255, 1 / s) * 255
            # Rounded to the nearest 8-bit value (ties away from zero, as MATLAB).
            assert np.abs(lr - np.clip(expected, 0, 255)).max() <= 0.5 + 1e-9
            np.testing.assert_array_equal(lr, np.clip(np.floor(expected + 0.5), 0, 255))
    assert _no_temporary_files(out)


def test_make_lr_keeps_16_bit_gray(tmp_path: Path) -> None:
    hr = (data.camera()[:30, :41].astype(np.uint16) * 257) ^ np.uint16(0x5A)  # both bytes matter
    _save(tmp_path / "hr", "deep.png", hr)
    make_lr(tmp_path / "hr", tmp_path / "lr", [2])
    with Image.open(tmp_path / "lr" / "X2" / "deepx2.png") as im:
        assert im.mode == "I;16"
        lr = np.asarray(im)
    expected = imresize(hr[:30, :40].astype(np.float64) / 65535, 1 / 2) * 65535
    np.testing.assert_array_equal(lr, np.clip(np.floor(expected + 0.5), 0, 65535))


def test_make_lr_errors(hr_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SisrError, match=r"HR folder .*nowhere does not exist"):
        make_lr(tmp_path / "nowhere", tmp_path / "out", [2])
    with pytest.raises(SisrError, match="scale must be an integer >= 2"):
        make_lr(hr_dir, tmp_path / "out", [1])
    _save(tmp_path / "tiny", "t.png", np.zeros((2, 5, 3), np.uint8))
    with pytest.raises(SisrError, match=r"t\.png: image of 2x5 pixels is smaller than scale 3"):
        make_lr(tmp_path / "tiny", tmp_path / "out", [3])


# ----------------------------------------------------------------------------------------------------
# Sub-images
# ----------------------------------------------------------------------------------------------------


def _expected_offsets(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """BasicSR's rule written out: regular steps while they fit, then one flush crop if the rest is big."""
    offsets = []
    start = 0
    while start + crop <= length:
        offsets.append(start)
        start += step
    if offsets and length - (offsets[-1] + crop) > thresh:
        offsets.append(length - crop)
    return offsets


def test_tile_positions_follow_basicsr() -> None:
    # DIV2K 0001.png is 1356x2040: the usual 480 / 240 tiling, worked out by hand.
    assert tile_positions(1356, 480, 240, 0) == [0, 240, 480, 720, 876]
    assert tile_positions(2040, 480, 240, 0) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    assert tile_positions(1356, 480, 240, 200) == [0, 240, 480, 720]  # 156 left over <= 200: dropped
    assert tile_positions(960, 480, 240, 0) == [0, 240, 480]  # exact fit: no extra crop
    assert tile_positions(479, 480, 240, 0) == []
    for length in range(1, 70):
        for crop, step, thresh in [(16, 8, 0), (16, 16, 3), (20, 7, 5), (8, 12, 0)]:
            assert tile_positions(length, crop, step, thresh) == _expected_offsets(length, crop, step, thresh)


def test_extract_subimages_cuts_the_expected_tiles(tmp_path: Path) -> None:
    photo = np.ascontiguousarray(data.coffee()[100:171, 200:297])  # 71x97
    _save(tmp_path / "in", "0007x2.png", photo)
    _save(tmp_path / "in", "small.png", photo[:20, :30])
    with pytest.warns(PrepareWarning, match=r"small\.png: 20x30 is smaller than the 32x32"):
        summary = extract_subimages(tmp_path / "in", tmp_path / "out", crop_size=32, step=24, thresh_size=4)
    rows, cols = _expected_offsets(71, 32, 24, 4), _expected_offsets(97, 32, 24, 4)
    assert (rows, cols) == ([0, 24, 39], [0, 24, 48, 65])  # 15 and 17 pixels left over > 4: flush crops
    files = sorted((tmp_path / "out").iterdir())
    assert summary.written == len(files) == len(rows) * len(cols)
    assert summary.images == 2 and len(summary.skipped) == 1
    index = 0
    for top in rows:
        for left in cols:
            index += 1
            tile = _load(tmp_path / "out" / f"0007_s{index:03d}.png")  # x2 suffix removed
            np.testing.assert_array_equal(tile, photo[top : top + 32, left : left + 32])


def test_extract_subimages_in_parallel_gives_the_same_files(hr_dir: Path, tmp_path: Path) -> None:
    serial = extract_subimages(hr_dir, tmp_path / "a", crop_size=40, step=20, workers=1)
    parallel = extract_subimages(hr_dir, tmp_path / "b", crop_size=40, step=20, workers=2)
    assert serial == parallel
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        np.testing.assert_array_equal(_load(tmp_path / "a" / name), _load(tmp_path / "b" / name))


def test_failed_write_leaves_no_partial_file(
    hr_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Image.Image.save

    def failing_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        original(self, io.BytesIO(), *args, **kwargs)
        fp.write(b"\x89PNG half")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(SisrError, match=r"0001_s001\.png: cannot write: disk full"):
        extract_subimages(hr_dir, tmp_path / "out", crop_size=40, step=20)
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# LMDB
# ----------------------------------------------------------------------------------------------------


def test_make_lmdb_round_trip(hr_dir: Path, tmp_path: Path) -> None:
    lmdb = pytest.importorskip("lmdb")
    out = tmp_path / "hr.lmdb"
    summary = make_lmdb(hr_dir, out)
    assert summary.written == 3
    lines = (out / "meta_info.txt").read_text().splitlines()
    assert lines == ["0001.png (71,85,3) 1", "0002.png (67,97,3) 1", "0003.png (73,79,1) 1"]
    env = lmdb.open(str(out), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for name in ("0001", "0002", "0003"):
                with Image.open(io.BytesIO(txn.get(name.encode()))) as im:
                    assert im.format == "PNG"
                    np.testing.assert_array_equal(np.asarray(im), _load(hr_dir / f"{name}.png"))
            assert txn.stat()["entries"] == 3
    finally:
        env.close()
    with pytest.raises(SisrError, match="already exists"):
        make_lmdb(hr_dir, out)
    with pytest.raises(SisrError, match=r"must end with \.lmdb"):
        make_lmdb(hr_dir, tmp_path / "hr.db")
    (hr_dir / "0004.png").write_bytes(b"broken")
    with pytest.raises(SisrError, match=r"0004\.png: cannot read the image header"):
        make_lmdb(hr_dir, tmp_path / "broken.lmdb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr", "hr.lmdb"]  # nothing half-written


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def test_cli_happy_paths(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lr", str(hr_dir), str(tmp_path / "lr"), "--scales", "2", "4"]) == 0
    assert "wrote 6 LR images (3 HR images at x2, x4)" in capsys.readouterr().out
    assert len(list((tmp_path / "lr" / "X4").glob("*x4.png"))) == 3

    sub = tmp_path / "sub"
    assert (
        main(["subimages", str(tmp_path / "lr" / "X2"), str(sub), "--crop-size", "20", "--step", "10"]) == 0
    )
    out = capsys.readouterr()
    assert re.search(r"wrote \d+ sub-images from 3 images to", out.out) and out.err == ""
    assert (tmp_path / "sub" / "0001_s001.png").is_file()

    pytest.importorskip("lmdb")
    assert main(["lmdb", str(tmp_path / "sub"), str(tmp_path / "sub.lmdb")]) == 0
    assert "images to" in capsys.readouterr().out
    assert (tmp_path / "sub.lmdb" / "data.mdb").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lr", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.fullmatch(r"sisr: error: HR folder .*missing does not exist.*\n", err)

    (tmp_path / "empty").mkdir()
    assert main(["subimages", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sisr: error: no images in input folder")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really\nmulti\nline")
    assert main(["lr", str(tmp_path / "bad"), str(tmp_path / "out2"), "--scales", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(r"sisr: error: .*x\.png: cannot decode image", err)
    assert list((tmp_path / "out2" / "X2").iterdir()) == []

    assert main(["subimages", str(tmp_path), str(tmp_path / "o"), "--step", "0"]) == 1
    assert "step must be an integer >= 1" in capsys.readouterr().err
    assert main(["lr"]) == 2  # usage error from argparse
    assert "usage: sisr prepare lr" in capsys.readouterr().err


def test_cli_prints_left_out_images_as_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save(tmp_path / "in", "big.png", np.zeros((40, 40, 3), np.uint8))
    _save(tmp_path / "in", "tiny.png", np.zeros((10, 10, 3), np.uint8))
    assert main(["subimages", str(tmp_path / "in"), str(tmp_path / "out"), "--crop-size", "32"]) == 0
    out = capsys.readouterr()
    assert "1 left out" in out.out
    assert re.fullmatch(r"sisr: warning: left out .*tiny\.png: 10x10 is smaller than .*\n", out.err)


def test_subimages_and_lmdb_read_and_write_through_the_one_reader(tmp_path: Path) -> None:
    """16-bit colour, which Pillow alone cuts to 8 bits, survives sub-images and LMDB values bit for bit."""
    import lmdb

    from sisr.data.images import decode_image, read_image, write_image

    rng = np.random.default_rng(3)
    hr = rng.integers(0, 65536, size=(20, 24, 3), dtype=np.uint16)
    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "0001.png", hr)
    extract_subimages(tmp_path / "hr", tmp_path / "sub", crop_size=12, step=12, compress_level=9)
    first = read_image(tmp_path / "sub" / "0001_s001.png").pixels
    assert first.dtype == np.uint16 and np.array_equal(first, hr[:12, :12])

    make_lmdb(tmp_path / "hr", tmp_path / "hr.lmdb", compress_level=0)
    env = lmdb.open(str(tmp_path / "hr.lmdb"), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            value = txn.get(b"0001")
    finally:
        env.close()
    assert np.array_equal(decode_image(value, "0001").pixels, hr)
    meta = (tmp_path / "hr.lmdb" / "meta_info.txt").read_text()
    assert meta == "0001.png (20,24,3) 0\n"


def test_png_compress_level_is_used(tmp_path: Path) -> None:
    from sisr.data.images import encode_image, read_image, write_image

    pixels = np.ascontiguousarray(data.astronaut()[:64, :64])
    sizes = []
    for level in (0, 9):
        write_image(tmp_path / f"{level}.png", pixels, compress_level=level)
        assert np.array_equal(read_image(tmp_path / f"{level}.png").pixels, pixels)
        assert (tmp_path / f"{level}.png").read_bytes() == encode_image(pixels, "png", compress_level=level)
        sizes.append((tmp_path / f"{level}.png").stat().st_size)
    assert sizes[0] > 64 * 64 * 3 > sizes[1]  # level 0 stores, level 9 compresses
    with pytest.raises(SisrError, match="compress level 10 is not between 0 and 9"):
        write_image(tmp_path / "x.png", pixels, compress_level=10)
