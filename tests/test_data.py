"""sisr.data.datasets and .loaders: pairing, crops, augmentation, LR on the fly, skipping, loading order."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from sisr.data.datasets import (
    IMAGE_SUFFIXES,
    GTOnlyDataset,
    PairedImageDataset,
    UnreadableImageWarning,
    augment,
    list_images,
    resize_bilinear,
    to_float_rgb,
)
from sisr.data.loaders import InfiniteLoader, SeededSampler, make_loader
from sisr.errors import SisrError
from sisr.imresize import imresize
from sisr.prepare import make_lmdb, make_lr


def _photos() -> dict[str, np.ndarray]:
    """Three uint8 RGB crops of scikit-image photos, sizes not multiples of 2, 3 or 4."""
    return {
        "0001": np.ascontiguousarray(data.astronaut()[90:161, 170:255]),  # 71x85
        "0002": np.ascontiguousarray(data.chelsea()[40:107, 100:197]),  # 67x97
        "0003": np.ascontiguousarray(data.coffee()[150:223, 250:329]),  # 73x79
    }


def _save(folder: Path, name: str, pixels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(pixels).save(path)
    return path


def _replicated_pairs(root: Path, scale: int) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """LQ = photo, GT = each LQ pixel repeated scale x scale: any aligned crop keeps GT = repeat(LQ)."""
    lqs = {}
    for name, photo in _photos().items():
        lq = photo[:40, :48]
        lqs[name] = lq
        _save(root / "lq", f"{name}x{scale}.png", lq)
        _save(root / "gt", f"{name}.png", lq.repeat(scale, axis=0).repeat(scale, axis=1))
    return root / "gt", root / "lq", lqs


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.numpy().transpose(1, 2, 0)


def _symmetries(img: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square applied to an (H, W, C) array (hflip, vflip, transpose)."""
    out = []
    for h in (False, True):
        for v in (False, True):
            for t in (False, True):
                x = img[:, ::-1] if h else img
                x = x[::-1] if v else x
                out.append(x.transpose(1, 0, 2) if t else x)
    return out


def _find_patch(image: np.ndarray, patch: np.ndarray) -> tuple[int, int, int]:
    """(top, left, k): the k-th symmetry of the window of ``image`` at (top, left) equals ``patch``."""
    size = patch.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(0, 1))
    windows = np.moveaxis(windows, 2, -1)  # (rows, cols, size, size, C)
    k = 0
    for h in (False, True):
        for v in (False, True):
            for t in (False, True):
                x = windows[:, :, :, ::-1] if h else windows
                x = x[:, :, ::-1] if v else x
                x = x.swapaxes(2, 3) if t else x
                hits = np.argwhere(np.all(x == patch, axis=(2, 3, 4)))
                if len(hits):
                    return int(hits[0][0]), int(hits[0][1]), k
                k += 1
    raise AssertionError("patch is not a crop of the image")


# ----------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------


def test_pairs_by_filename_template(tmp_path: Path) -> None:
    gt_root, lq_root, lqs = _replicated_pairs(tmp_path, 2)
    ds = PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2")
    assert len(ds) == 3
    for i, name in enumerate(sorted(lqs)):
        sample = ds[i]
        assert sample["gt_path"] == str(gt_root / f"{name}.png")
        assert sample["lq_path"] == str(lq_root / f"{name}x2.png")
        # Validation returns whole images, float32 in [0, 1], channels first.
        assert sample["lq"].dtype == torch.float32 and sample["lq"].shape == (3, 40, 48)
        np.testing.assert_array_equal(_hwc(sample["lq"]) * 255, lqs[name])
        assert sample["gt"].shape == (3, 80, 96)


def test_meta_info_file_lists_the_gt_images(tmp_path: Path) -> None:
    gt_root, lq_root, _ = _replicated_pairs(tmp_path, 2)
    meta = tmp_path / "meta.txt"
    meta.write_text("0003.png (80,96,3)\n\n0001.png (80,96,3)\n")
    ds = PairedImageDataset(
        gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2", meta_info_file=meta
    )
    assert [ds[i]["gt_path"] for i in range(len(ds))] == [
        str(gt_root / "0003.png"),
        str(gt_root / "0001.png"),
    ]


def test_pairing_errors_name_the_files(tmp_path: Path) -> None:
    gt_root, lq_root, _ = _replicated_pairs(tmp_path, 2)
    (lq_root / "0002x2.png").unlink()
    with pytest.raises(SisrError, match=r"GT image .*0002\.png has no LQ partner: expected .*0002x2\.png"):
        PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2")
    (gt_root / "0002.png").unlink()
    _save(lq_root, "0009x2.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(SisrError, match=r"1 LQ image\(s\) in .* have no GT partner, e\.g\. .*0009x2\.png"):
        PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(SisrError, match=r"no images in GT folder .*empty"):
        PairedImageDataset(gt_root=empty, lq_root=lq_root, scale=2)
    with pytest.raises(SisrError, match=r"LQ folder .*missing does not exist"):
        PairedImageDataset(gt_root=gt_root, lq_root=tmp_path / "missing", scale=2)
    with pytest.raises(SisrError, match="multiple of scale"):
        PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=3, gt_size=16)


def test_sizes_inconsistent_with_scale(tmp_path: Path) -> None:
    gt_root, lq_root, lqs = _replicated_pairs(tmp_path, 2)
    # A GT up to scale - 1 pixels too big (not mod-cropped) is cropped ...
    big = np.pad(lqs["0001"].repeat(2, axis=0).repeat(2, axis=1), ((0, 1), (0, 1), (0, 0)))
    _save(gt_root, "0001.png", big)
    ds = PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2")
    assert ds[0]["gt"].shape == (3, 80, 96)
    # ... a GT of the wrong size is an error naming both files.
    _save(gt_root, "0001.png", big[:-3])
    with pytest.raises(SisrError, match=r"GT .*0001\.png is 78x97 but LQ .*0001x2\.png is 40x48"):
        ds[0]


# ----------------------------------------------------------------------------------------------------
# Crops and augmentation
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3])
def test_random_crops_are_aligned_and_augmented_together(tmp_path: Path, scale: int) -> None:
    gt_root, lq_root, lqs = _replicated_pairs(tmp_path, scale)
    gt_size = 8 * scale
    ds = PairedImageDataset(
        gt_root=gt_root,
        lq_root=lq_root,
        scale=scale,
        filename_tmpl=f"{{}}x{scale}",
        gt_size=gt_size,
        use_hflip=True,
        use_rot=True,
    )
    symmetries, corners = set(), set()
    for seed in range(48):
        sample = ds[(seed % 3, seed)]
        lq, gt = _hwc(sample["lq"]), _hwc(sample["gt"])
        assert lq.shape == (8, 8, 3) and gt.shape == (gt_size, gt_size, 3)
        # The same crop and the same flips/rotation on both: GT is still LQ with pixels repeated.
        np.testing.assert_array_equal(gt, lq.repeat(scale, axis=0).repeat(scale, axis=1))
        top, left, k = _find_patch(lqs[Path(sample["gt_path"]).stem] / np.float32(255), lq)
        symmetries.add(k)
        corners.add((top, left))
    assert symmetries == set(range(8))  # hflip, vflip and transpose all happen, in every combination
    assert len(corners) > 30

    plain = PairedImageDataset(
        gt_root=gt_root, lq_root=lq_root, scale=scale, filename_tmpl=f"{{}}x{scale}", gt_size=gt_size
    )
    for seed in range(8):
        sample = plain[(0, seed)]
        assert _find_patch(lqs["0001"] / np.float32(255), _hwc(sample["lq"]))[2] == 0  # identity only


def test_augment_applies_one_transform_to_all_images() -> None:
    a = np.arange(5 * 5 * 2).reshape(5, 5, 2)
    b = a * 10 + 1
    seen = set()
    for seed in range(40):
        out_a, out_b = augment([a, b], hflip=True, rot=True, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(out_b, out_a * 10 + 1)
        seen.add(next(k for k, s in enumerate(_symmetries(a)) if np.array_equal(s, out_a)))
    assert seen == set(range(8))
    for seed in range(20):
        (flipped,) = augment([a], hflip=True, rot=False, rng=np.random.default_rng(seed))
        assert np.array_equal(flipped, a) or np.array_equal(flipped, a[:, ::-1])


def test_crops_of_make_lr_output_match_bicubic_of_the_gt_crop(tmp_path: Path) -> None:
    for name, photo in _photos().items():
        _save(tmp_path / "hr", f"{name}.png", photo)
    make_lr(tmp_path / "hr", tmp_path / "lr", [3])
    ds = PairedImageDataset(
        gt_root=tmp_path / "hr", lq_root=tmp_path / "lr" / "X3", scale=3, filename_tmpl="{}x3", gt_size=36
    )
    for seed in range(6):
        sample = ds[(seed % 3, seed)]
        lq, gt = _hwc(sample["lq"]), _hwc(sample["gt"])
        expected = imresize(gt, 1 / 3)
        # Away from the patch border (2 LR pixels: the kernel's reach), the LR patch is the bicubic
        # image of the GT patch, up to the 8-bit rounding of the stored LR image.
        np.testing.assert_allclose(lq[2:-2, 2:-2], expected[2:-2, 2:-2], atol=0.5 / 255 + 1e-6)


# ----------------------------------------------------------------------------------------------------
# LR made on the fly
# ----------------------------------------------------------------------------------------------------


def test_resize_bilinear_matches_torch_bilinear_upsampling() -> None:
    img = data.astronaut()[200:223, 250:265].astype(np.float32) / 255  # 23x15
    ours = resize_bilinear(img, 40, 27)
    x = torch.from_numpy(img.transpose(2, 0, 1))[None]
    ref = torch.nn.functional.interpolate(x, size=(40, 27), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, ref[0].numpy().transpose(1, 2, 0), atol=1e-6)
    np.testing.assert_array_equal(resize_bilinear(img, 23, 15), img)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_gt_only_lr_is_bicubic_of_the_modcropped_crop(tmp_path: Path, scale: int) -> None:
    photos = _photos()
    for name, photo in photos.items():
        _save(tmp_path / "cls_a" if name != "0003" else tmp_path / "cls_b", f"{name}.png", photo)
    gt_size = 12 * scale
    ds = GTOnlyDataset(gt_root=tmp_path, scale=scale, gt_size=gt_size)
    assert len(ds) == 3  # found in the class folders
    for seed in range(4):
        sample = ds[(seed % 3, seed)]
        gt, lq = _hwc(sample["gt"]), _hwc(sample["lq"])
        assert gt.shape == (gt_size, gt_size, 3) and lq.shape == (12, 12, 3)
        np.testing.assert_array_equal(lq, imresize(gt, 1 / scale))
        # The GT patch is a crop of the mod-cropped photo on the scale grid ...
        photo = photos[Path(sample["gt_path"]).stem]
        h, w = photo.shape[0] // scale * scale, photo.shape[1] // scale * scale
        top, left, k = _find_patch(photo[:h, :w] / np.float32(255), gt)
        assert k == 0 and top % scale == 0 and left % scale == 0
        # ... and its LR equals the whole image's LR (MMA's order) away from the patch border.
        whole = imresize(photo[:h, :w].astype(np.float32) / 255, 1 / scale)
        window = whole[top // scale : top // scale + 12, left // scale : left // scale + 12]
        np.testing.assert_allclose(lq[2:-2, 2:-2], window[2:-2, 2:-2], atol=1e-5)

    augmented = GTOnlyDataset(gt_root=tmp_path, scale=scale, gt_size=gt_size, use_hflip=True, use_rot=True)
    for seed in range(4):
        sample = augmented[(0, seed)]
        # Flips and transposes commute with the bicubic resize.
        np.testing.assert_allclose(_hwc(sample["lq"]), imresize(_hwc(sample["gt"]), 1 / scale), atol=1e-6)


def test_gt_only_stretches_small_images_like_mma(tmp_path: Path) -> None:
    photo = _photos()["0001"]  # 71x85 -> mod-crop 70x84 at x2
    _save(tmp_path, "small.png", photo)
    ds = GTOnlyDataset(gt_root=tmp_path, scale=2, gt_size=80)
    sample = ds[(0, 0)]
    # Height 70 < 80 is stretched to 80; width 84 is kept (the crop then takes 80 of it).
    stretched = resize_bilinear(photo[:70, :84].astype(np.float32) / 255, 80, 84)
    gt = _hwc(sample["gt"])
    left = next(x for x in (0, 2, 4) if np.allclose(stretched[:, x : x + 80], gt, atol=1e-6))
    np.testing.assert_allclose(stretched[:, left : left + 80], gt, atol=1e-6)
    np.testing.assert_array_equal(_hwc(sample["lq"]), imresize(gt, 1 / 2))


# ----------------------------------------------------------------------------------------------------
# Unreadable files
# ----------------------------------------------------------------------------------------------------


def test_unreadable_file_is_skipped_with_one_warning_and_counted(tmp_path: Path) -> None:
    for name, photo in _photos().items():
        _save(tmp_path, f"{name}.png", photo)
    (tmp_path / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    ds = GTOnlyDataset(gt_root=tmp_path, scale=2, gt_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = [ds[(1, seed)]["gt_path"] for seed in range(6)]  # index 1 is the damaged file
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert len(messages) == 1 and "0002.png" in messages[0]  # once per file
    assert ds.skipped == 1 and ds.skipped_files == [str(tmp_path / "0002.png")]
    assert all(Path(p).name in ("0001.png", "0003.png") for p in paths)
    assert paths == [ds[(1, seed)]["gt_path"] for seed in range(6)]  # the replacement is seeded


def test_unreadable_lq_is_skipped_and_all_unreadable_is_an_error(tmp_path: Path) -> None:
    gt_root, lq_root, _ = _replicated_pairs(tmp_path, 2)
    (lq_root / "0001x2.png").write_bytes(b"")
    ds = PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2", gt_size=16)
    with pytest.warns(UnreadableImageWarning, match=r"0001x2\.png"):
        sample = ds[(0, 7)]
    assert sample["gt_path"] != str(gt_root / "0001.png") and ds.skipped == 1

    for path in gt_root.iterdir():
        path.write_bytes(b"garbage")
    ds = PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2")
    with pytest.warns(UnreadableImageWarning), pytest.raises(SisrError, match="none of the 3 images"):
        ds[0]


# ----------------------------------------------------------------------------------------------------
# Loading order
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def train_set(tmp_path: Path) -> GTOnlyDataset:
    for name, photo in _photos().items():
        _save(tmp_path, f"{name}.png", photo)
    return GTOnlyDataset(gt_root=tmp_path, scale=2, gt_size=16, use_hflip=True, use_rot=True, enlarge_ratio=2)


def _take(stream: InfiniteLoader, n: int) -> list[dict]:
    return [next(stream) for _ in range(n)]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["gt_path"] == y["gt_path"]
        assert torch.equal(x["gt"], y["gt"]) and torch.equal(x["lq"], y["lq"])


def test_loader_is_deterministic_and_independent_of_workers(train_set: GTOnlyDataset) -> None:
    def batches(seed: int, workers: int) -> list[dict]:
        loader = make_loader(
            train_set, batch_size=2, shuffle=True, num_workers=workers, seed=seed, drop_last=True
        )
        return _take(InfiniteLoader(loader), 7)  # 3 batches per epoch: crosses two epoch ends

    first = batches(5, 0)
    _assert_same_batches(first, batches(5, 0))
    _assert_same_batches(first, batches(5, 2))
    other = batches(6, 0)
    assert any(not torch.equal(x["gt"], y["gt"]) for x, y in zip(first, other, strict=True))
    # Each epoch draws new crops and a new order: epochs 0 and 1 differ.
    assert any(not torch.equal(x["gt"], y["gt"]) for x, y in zip(first[:3], first[3:6], strict=True))


@pytest.mark.parametrize("resume_at", [1, 3, 5])
def test_resume_reproduces_the_uninterrupted_batches(train_set: GTOnlyDataset, resume_at: int) -> None:
    def stream(start: int) -> InfiniteLoader:
        loader = make_loader(train_set, batch_size=2, shuffle=True, num_workers=0, seed=3, drop_last=True)
        return InfiniteLoader(loader, start_iteration=start)

    uninterrupted = _take(stream(0), 8)
    resumed = stream(resume_at)
    assert resumed.epoch == resume_at // 3 and resumed.iteration == resume_at
    _assert_same_batches(uninterrupted[resume_at:], _take(resumed, 8 - resume_at))
    assert resumed.iteration == 8


def test_seeded_sampler_permutes_each_epoch_and_shards_ranks(train_set: GTOnlyDataset) -> None:
    sampler = SeededSampler(train_set, shuffle=True, seed=0)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert sorted(i for i, _ in keys) == list(range(6))  # a permutation of the enlarged dataset
        assert len({s for _, s in keys}) == 6  # a distinct seed per sample
        epochs.append(keys)
    assert epochs[0] != epochs[1] != epochs[2]
    sampler.set_epoch(1, start=4)
    assert list(sampler) == epochs[1][4:] and len(sampler) == 2

    shards = [SeededSampler(train_set, shuffle=True, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    keys0, keys1 = list(shards[0]), list(shards[1])
    assert sorted(i for i, _ in keys0 + keys1) == list(range(6))
    # Rank r takes every other sample of the single-process epoch, with the same per-sample seeds.
    assert keys0 == epochs[0][0::2] and keys1 == epochs[0][1::2]


def test_loader_errors(train_set: GTOnlyDataset) -> None:
    plain = torch.utils.data.DataLoader(train_set, batch_size=2)
    with pytest.raises(SisrError, match="make_loader"):
        InfiniteLoader(plain)
    loader = make_loader(train_set, batch_size=8, shuffle=True, num_workers=0, seed=0, drop_last=True)
    with pytest.raises(SisrError, match="no batch"):
        InfiniteLoader(loader)
    with pytest.raises(SisrError, match="init_process_group"):
        make_loader(
            train_set, batch_size=2, shuffle=True, num_workers=0, seed=0, distributed=True, drop_last=True
        )


# ----------------------------------------------------------------------------------------------------
# LMDB
# ----------------------------------------------------------------------------------------------------


def test_lmdb_backend_reads_the_same_samples_as_disk(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    gt_root, lq_root, _ = _replicated_pairs(tmp_path, 2)
    make_lmdb(gt_root, tmp_path / "gt.lmdb")
    make_lmdb(lq_root, tmp_path / "lq.lmdb")
    options = {"scale": 2, "filename_tmpl": "{}x2", "gt_size": 16, "use_hflip": True, "use_rot": True}
    disk = PairedImageDataset(gt_root=gt_root, lq_root=lq_root, **options)
    db = PairedImageDataset(
        gt_root=tmp_path / "gt.lmdb", lq_root=tmp_path / "lq.lmdb", io_backend="lmdb", **options
    )
    for seed in range(3):
        a, b = disk[(seed, seed)], db[(seed, seed)]
        assert b["gt_path"] == Path(a["gt_path"]).stem and b["lq_path"] == Path(a["lq_path"]).stem
        assert torch.equal(a["gt"], b["gt"]) and torch.equal(a["lq"], b["lq"])
    # Picklable after use (the environment is reopened in a new process), as DataLoader workers need.
    clone = pickle.loads(pickle.dumps(db))
    assert torch.equal(clone[(1, 1)]["gt"], db[(1, 1)]["gt"])
    # Workers forked after the parent has opened the LMDB reopen it.
    batches = [
        next(iter(make_loader(db, batch_size=3, shuffle=True, num_workers=n, seed=1, drop_last=False)))
        for n in (0, 2)
    ]
    _assert_same_batches([batches[0]], [batches[1]])
    gt_only = GTOnlyDataset(gt_root=tmp_path / "gt.lmdb", scale=2, gt_size=16, io_backend="lmdb")
    assert gt_only[(0, 0)]["gt"].shape == (3, 16, 16)


def test_lmdb_missing_package_or_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gt_root, lq_root, _ = _replicated_pairs(tmp_path, 2)
    monkeypatch.setitem(__import__("sys").modules, "lmdb", None)  # makes `import lmdb` fail
    with pytest.raises(SisrError, match="pip install lmdb"):
        PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, io_backend="lmdb")
    monkeypatch.undo()
    pytest.importorskip("lmdb")
    with pytest.raises(SisrError, match=r"GT LMDB .*gt has no data\.mdb"):
        PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, io_backend="lmdb")


# ----------------------------------------------------------------------------------------------------
# Checks when a dataset is built, the one reader, errors from workers
# ----------------------------------------------------------------------------------------------------


def test_every_mismatched_pair_is_reported_when_the_dataset_is_built(tmp_path: Path) -> None:
    gt_root, lq_root, lqs = _replicated_pairs(tmp_path, 2)
    _save(gt_root, "0001.png", np.zeros((70, 96, 3), np.uint8))  # LQ 40x48 wants GT 80x96
    _save(lq_root, "0003x2.png", np.zeros((39, 48, 3), np.uint8))  # GT 80x96 wants LQ 40x48
    with pytest.raises(SisrError) as caught:
        PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("2 of 3 GT/LQ pairs: GT ")
    assert re.search(r"GT .*0001\.png is 70x96 but LQ .*0001x2\.png is 40x48", message)
    assert re.search(r"GT .*0003\.png is 80x96 but LQ .*0003x2\.png is 39x48", message)
    # An LQ image smaller than the training patch is found then too.
    _save(gt_root, "0001.png", lqs["0001"].repeat(2, axis=0).repeat(2, axis=1))
    _save(lq_root, "0003x2.png", lqs["0003"])
    with pytest.raises(
        SisrError, match=r"^3 of 3 GT/LQ pairs: LQ .*0001x2\.png is 40x48, smaller than the 44x44"
    ):
        PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2", gt_size=88)


def test_sizes_from_the_header_follow_the_exif_orientation(tmp_path: Path) -> None:
    lq = _photos()["0001"][:40, :48]
    gt = lq.repeat(2, axis=0).repeat(2, axis=1)  # 80x96 upright
    _save(tmp_path / "lq", "a.png", lq)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 96x80, shown rotated clockwise
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.ascontiguousarray(np.rot90(gt, 1))).save(tmp_path / "gt" / "a.png", exif=exif)
    ds = PairedImageDataset(gt_root=tmp_path / "gt", lq_root=tmp_path / "lq", scale=2)
    assert ds[0]["gt"].shape == (3, 80, 96) and ds.lq_size(0) == (40, 48)


def test_sixteen_bit_colour_and_gray_with_alpha_become_the_networks_rgb(tmp_path: Path) -> None:
    from sisr.data.images import write_image

    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, size=(16, 20, 3), dtype=np.uint16)
    (tmp_path / "gt").mkdir()
    (tmp_path / "lq").mkdir()
    write_image(tmp_path / "gt" / "deep.png", deep)
    write_image(tmp_path / "lq" / "deep.png", deep[::2, ::2])
    sample = PairedImageDataset(gt_root=tmp_path / "gt", lq_root=tmp_path / "lq", scale=2)[0]
    # 16 bits kept (the old reader of the datasets reduced 16-bit colour to 8 bits).
    np.testing.assert_array_equal(_hwc(sample["gt"]), deep.astype(np.float32) / np.float32(65535))
    gray_alpha = np.stack([np.arange(12, dtype=np.uint8).reshape(3, 4), np.full((3, 4), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(
        to_float_rgb(gray_alpha), np.repeat(gray_alpha[:, :, :1], 3, axis=2) / np.float32(255)
    )


def test_one_suffix_set_the_reader_reads(tmp_path: Path) -> None:
    from sisr.data.images import IMAGE_EXTENSIONS

    assert IMAGE_SUFFIXES == frozenset(IMAGE_EXTENSIONS)
    _save(tmp_path, "a.png", np.zeros((4, 4, 3), np.uint8))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.ppm")  # the reader refuses PPM
    assert [p.name for p in list_images(tmp_path, what="GT")] == ["a.png"]


def test_an_error_in_a_loader_worker_is_the_original_one_line_message(tmp_path: Path) -> None:
    gt_root, lq_root, _ = _replicated_pairs(tmp_path, 2)
    for path in gt_root.iterdir():
        path.write_bytes(b"garbage")  # no header: the build passes, every draw fails
    ds = PairedImageDataset(gt_root=gt_root, lq_root=lq_root, scale=2, filename_tmpl="{}x2", gt_size=16)
    loader = make_loader(ds, batch_size=1, shuffle=False, num_workers=1, seed=0, drop_last=True)
    with pytest.raises(SisrError) as caught:
        next(InfiniteLoader(loader))
    assert str(caught.value) == "none of the 3 images of the dataset could be read"
