"""Benchmark evaluation: the papers' protocol, batching, self-ensemble, reports, CLI and distributed runs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data
from torch import Tensor, nn

from sisr.checkpoint import load_model
from sisr.cli import main
from sisr.errors import SisrError
from sisr.evaluate import (
    Failure,
    MetricSpec,
    evaluate_dataset,
    evaluate_datasets,
    find_benchmark,
    find_benchmarks,
    format_results,
    raise_failures,
)
from sisr.imresize import imresize, imresize_torch
from sisr.metrics import psnr, ssim
from sisr.models import create_model

SCALE = 4

pytestmark = pytest.mark.usefixtures("one_thread")


# HR crops of different photos; two share a size (so they batch together), one is not a multiple of 4.
def _hr_images() -> dict[str, np.ndarray]:
    return {
        "astro": data.astronaut()[100:148, 180:220],  # 48x40
        "cat": data.chelsea()[60:108, 120:160],  # 48x40
        "coffee": data.coffee()[150:194, 250:302],  # 44x52
        "rocket": data.rocket()[200:250, 300:342],  # 50x42: mod-cropped to 48x40
    }


def _make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """What the benchmark LR files hold: MATLAB imresize of the mod-cropped HR, then im2uint8."""
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    lr = imresize(hr[:h, :w].astype(np.float64) / 255.0, 1.0 / scale)
    return np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``Bench/HR/*.png`` and ``Bench/LR_bicubic/X4/*x4.png``."""
    root = tmp_path_factory.mktemp("data") / "Bench"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / f"X{SCALE}").mkdir(parents=True)
    for name, hr in _hr_images().items():
        Image.fromarray(np.ascontiguousarray(hr)).save(root / "HR" / f"{name}.png")
        Image.fromarray(_make_lr(hr, SCALE)).save(root / "LR_bicubic" / f"X{SCALE}" / f"{name}x{SCALE}.png")
    return root


@pytest.fixture(scope="module")
def seemore_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SeemoRe-T x4 at random init, saved as an official-style ``{"params": ...}`` checkpoint."""
    torch.manual_seed(0)
    model = create_model("seemore-t", SCALE)
    with torch.no_grad():  # make the output depend visibly on the input (the last conv starts tiny)
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("weights") / "seemore_t_x4.pth"
    torch.save({"params": model.state_dict()}, path)
    return path


class Bicubic(nn.Module):
    """Oracle: MATLAB bicubic upsampling (in float64)."""

    def forward(self, x: Tensor) -> Tensor:
        return imresize_torch(x.double(), SCALE).float()


class Nearest(nn.Module):
    """Nearest upsampling: commutes exactly with flips and transposes."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=SCALE, mode="nearest")


class Shifted(nn.Module):
    """Nearest upsampling of a shifted image: not equivariant, so the self-ensemble must change it."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(torch.roll(x, shifts=(1, 2), dims=(-2, -1)), scale_factor=SCALE, mode="nearest")


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------------------------------------------
# The protocol


def test_oracle_matches_hand_computed_metrics(bench: Path) -> None:
    folder = find_benchmark(bench, SCALE)
    assert not folder.generates_lr
    result = evaluate_dataset(Bicubic(), folder, scale=SCALE)
    assert result["images"] == 4 and result["dataset"] == "Bench"
    assert [e["name"] for e in result["per_image"]] == ["astro", "cat", "coffee", "rocket"]
    by_hand = []
    for entry in result["per_image"]:
        name = entry["name"]
        lr = _read(bench / "LR_bicubic" / "X4" / f"{name}x4.png").astype(np.float32) / np.float32(255)
        sr = imresize(lr, SCALE).astype(np.float32)
        sr = np.round(np.clip(sr, 0, 1) * np.float32(255.0)).astype(np.uint8)
        gt = np.ascontiguousarray(_read(bench / "HR" / f"{name}.png")[: sr.shape[0], : sr.shape[1]])
        p = psnr(sr, gt, crop_border=SCALE, y_channel=True)
        s = ssim(sr, gt, crop_border=SCALE, y_channel=True)
        # Exactly: the same uint8 images (the oracle's float64 matmuls agree with numpy's to the bit here).
        assert (entry["psnr"], entry["ssim"]) == (p, s)
        by_hand.append((p, s))
    assert result["metrics"]["psnr"] == pytest.approx(np.mean([p for p, _ in by_hand]), rel=1e-12)
    assert result["metrics"]["ssim"] == pytest.approx(np.mean([s for _, s in by_hand]), rel=1e-12)
    # Bicubic x4 of these crops: a plausible PSNR, far from a broken pipeline's.
    assert 20.0 < result["metrics"]["psnr"] < 40.0
    assert 0.5 < result["metrics"]["ssim"] < 1.0

    # The settings change the numbers as they should: RGB instead of Y, and no border crop.
    rgb = evaluate_dataset(Bicubic(), folder, scale=SCALE, y_channel=False, metrics=("psnr",))
    name = rgb["per_image"][0]["name"]
    lr = _read(bench / "LR_bicubic" / "X4" / f"{name}x4.png").astype(np.float32) / np.float32(255)
    sr = np.round(np.clip(imresize(lr, SCALE).astype(np.float32), 0, 1) * np.float32(255)).astype(np.uint8)
    gt = _read(bench / "HR" / f"{name}.png")
    assert rgb["per_image"][0]["psnr"] == pytest.approx(psnr(sr, gt, crop_border=SCALE), rel=1e-12)
    assert set(rgb["metrics"]) == {"psnr"}
    zero = evaluate_dataset(Bicubic(), folder, scale=SCALE, crop_border=0, metrics=("psnr",))
    assert zero["per_image"][0]["psnr"] == pytest.approx(psnr(sr, gt, y_channel=True), rel=1e-12)
    assert zero["metrics"]["psnr"] != result["metrics"]["psnr"]


def test_outputs_are_clamped_and_rounded_like_tensor2img(bench: Path, tmp_path: Path) -> None:
    class Overshoot(nn.Module):  # many values outside [0, 1], and many exactly half-way between levels
        def forward(self, x: Tensor) -> Tensor:
            return F.interpolate(x, scale_factor=SCALE, mode="nearest") * 1.5 - 0.25

    folder = find_benchmark(bench, SCALE)
    result = evaluate_dataset(Overshoot(), folder, scale=SCALE, save_dir=tmp_path)
    for entry in result["per_image"]:
        name = entry["name"]
        lr = _read(bench / "LR_bicubic" / "X4" / f"{name}x4.png").astype(np.float32) / np.float32(255)
        up = np.repeat(np.repeat(lr, SCALE, axis=0), SCALE, axis=1) * np.float32(1.5) - np.float32(0.25)
        expected = np.round(np.clip(up, 0, 1) * np.float32(255)).astype(np.uint8)
        assert np.array_equal(_read(tmp_path / f"{name}.png"), expected)
        gt = np.ascontiguousarray(
            _read(bench / "HR" / f"{name}.png")[: expected.shape[0], : expected.shape[1]]
        )
        assert entry["psnr"] == psnr(expected, gt, crop_border=SCALE, y_channel=True)


def test_hr_only_folder_makes_the_same_lr(bench: Path, tmp_path: Path) -> None:
    hr_only = tmp_path / "Only"
    (hr_only / "HR").mkdir(parents=True)
    for p in (bench / "HR").iterdir():
        (hr_only / "HR" / p.name).write_bytes(p.read_bytes())
    folder = find_benchmark(hr_only, SCALE)
    assert folder.generates_lr
    ref = find_benchmark(bench, SCALE)
    for i in range(len(ref)):
        assert torch.equal(folder[i]["lq"], ref[i]["lq"])
        assert folder.lq_size(i) == ref.lq_size(i) == tuple(ref[i]["lq"].shape[-2:])
    made = evaluate_dataset(Bicubic(), folder, scale=SCALE)
    files = evaluate_dataset(Bicubic(), ref, scale=SCALE)
    assert made["per_image"] == files["per_image"]
    # A folder holding the HR images directly works too.
    flat = find_benchmark(hr_only / "HR", SCALE)
    assert flat.generates_lr and len(flat) == 4 and flat.name == "Only"


def test_basicsr_layout(bench: Path, tmp_path: Path) -> None:
    root = tmp_path / "Set"
    (root / "GTmod12").mkdir(parents=True)
    (root / "LRbicx4").mkdir()
    for name, hr in _hr_images().items():
        Image.fromarray(np.ascontiguousarray(hr)).save(root / "GTmod12" / f"{name}.png")
        Image.fromarray(_make_lr(hr, SCALE)).save(root / "LRbicx4" / f"{name}.png")
    folder = find_benchmark(root, SCALE)
    assert not folder.generates_lr
    a = evaluate_dataset(Nearest(), folder, scale=SCALE)
    b = evaluate_dataset(Nearest(), find_benchmark(bench, SCALE), scale=SCALE)
    assert a["per_image"] == b["per_image"]


def test_batching_self_ensemble_and_saving(bench: Path, seemore_path: Path, tmp_path: Path) -> None:
    model = load_model(seemore_path)
    folder = find_benchmark(bench, SCALE)
    one = evaluate_dataset(model, folder, scale=SCALE, batch_size=1, save_dir=tmp_path / "b1")
    four = evaluate_dataset(
        model, folder, scale=SCALE, batch_size=4, save_dir=tmp_path / "b4", save_suffix="T"
    )
    assert one["per_image"] == four["per_image"] and one["metrics"] == four["metrics"]
    for name in ("astro", "cat", "coffee", "rocket"):
        a, b = _read(tmp_path / "b1" / f"{name}.png"), _read(tmp_path / "b4" / f"{name}_T.png")
        assert a.shape == ((44, 52, 3) if name == "coffee" else (48, 40, 3))
        assert np.array_equal(a, b)
    assert not [p for p in (tmp_path / "b4").iterdir() if p.name.startswith(".")]  # no temporaries left
    # The saved images are what was scored.
    gt = _read(bench / "HR" / "rocket.png")[:48, :40]
    saved = _read(tmp_path / "b1" / "rocket.png")
    assert one["per_image"][3]["psnr"] == psnr(saved, gt, crop_border=SCALE, y_channel=True)

    # Tiles of the whole image give the untiled result.
    tiled = evaluate_dataset(model, folder, scale=SCALE, tile=64)
    assert tiled["per_image"] == one["per_image"]

    plain = evaluate_dataset(Nearest(), folder, scale=SCALE, batch_size=2)
    ensemble = evaluate_dataset(Nearest(), folder, scale=SCALE, batch_size=2, self_ensemble=True)
    assert ensemble["per_image"] == plain["per_image"] and ensemble["self_ensemble"]
    shifted = evaluate_dataset(Shifted(), folder, scale=SCALE)
    shifted_plus = evaluate_dataset(Shifted(), folder, scale=SCALE, self_ensemble=True)
    assert shifted_plus["metrics"]["psnr"] != shifted["metrics"]["psnr"]


def test_batches_without_size_hints_equal_single(bench: Path) -> None:
    """A dataset without ``lq_size`` batches consecutive equal sizes only; numbers stay the same."""

    class Plain(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.inner = find_benchmark(bench, SCALE)

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, i: int) -> dict:
            sample = self.inner[i]
            return {"lq": sample["lq"], "gt": sample["gt"], "gt_path": sample["gt_path"]}

    a = evaluate_dataset(Shifted(), Plain(), scale=SCALE, batch_size=3)
    b = evaluate_dataset(Shifted(), find_benchmark(bench, SCALE), scale=SCALE)
    assert a["per_image"] == b["per_image"] and a["dataset"] == "Plain"


def test_named_metrics_with_own_settings(bench: Path) -> None:
    folder = find_benchmark(bench, SCALE)
    specs = {
        "psnr_rgb": MetricSpec(kind="psnr", crop_border=0, y_channel=False),
        "ssim": MetricSpec(kind="ssim"),
    }
    result = evaluate_dataset(Nearest(), folder, scale=SCALE, metrics=specs)
    assert result["settings"]["psnr_rgb"] == {"kind": "psnr", "crop_border": 0, "y_channel": False}
    assert result["settings"]["ssim"] == {"kind": "ssim", "crop_border": SCALE, "y_channel": True}
    assert "psnr_rgb" in format_results([result], "text")


def test_errors(bench: Path, tmp_path: Path) -> None:
    with pytest.raises(SisrError, match="no such folder"):
        find_benchmark(tmp_path / "missing", SCALE)
    (tmp_path / "empty" / "HR").mkdir(parents=True)
    with pytest.raises(SisrError, match="no images"):
        find_benchmark(tmp_path / "empty", SCALE)
    bad = tmp_path / "bad"
    (bad / "HR").mkdir(parents=True)
    (bad / "LR_bicubic" / "X4").mkdir(parents=True)
    for name in ("a", "b"):
        (bad / "HR" / f"{name}.png").write_bytes((bench / "HR" / "astro.png").read_bytes())
    (bad / "LR_bicubic" / "X4" / "ax4.png").write_bytes(
        (bench / "LR_bicubic" / "X4" / "astrox4.png").read_bytes()
    )
    (bad / "LR_bicubic" / "X4" / "cx4.png").write_bytes(
        (bench / "LR_bicubic" / "X4" / "astrox4.png").read_bytes()
    )
    with pytest.raises(SisrError, match=r"b\.png has no LQ partner: expected .*bx4\.png"):
        find_benchmark(bad, SCALE)
    (bad / "HR" / "c.png").write_bytes((bench / "HR" / "coffee.png").read_bytes())
    (bad / "LR_bicubic" / "X4" / "bx4.png").write_bytes(
        (bench / "LR_bicubic" / "X4" / "astrox4.png").read_bytes()
    )
    # c (44x52) is paired with a 12x10 LR: found from the headers when the set is built.
    with pytest.raises(
        SisrError, match=r"c\.png is 44x52 but LQ .*cx4\.png is 12x10: at scale 4 the GT must be 48x40"
    ):
        find_benchmark(bad, SCALE)
    with pytest.raises(SisrError, match="not x2"):
        evaluate_dataset(Nearest(), find_benchmark(bench, 2), scale=2)
    with pytest.raises(SisrError, match="batch_size"):
        evaluate_dataset(Nearest(), find_benchmark(bench, SCALE), scale=SCALE, batch_size=0)


# ---------------------------------------------------------------------------------------------------------
# Reports


def test_formats(bench: Path) -> None:
    folder = find_benchmark(bench, SCALE)
    a = evaluate_dataset(Bicubic(), folder, scale=SCALE)
    b = evaluate_dataset(Nearest(), folder, scale=SCALE, self_ensemble=True, name="Near")
    text = format_results([a, b], "text")
    lines = text.splitlines()
    assert lines[0].split() == ["dataset", "images", "PSNR-Y", "SSIM-Y"]
    assert lines[1].split() == ["Bench", "4", f"{a['metrics']['psnr']:.4f}", f"{a['metrics']['ssim']:.6f}"]
    assert lines[2].split()[0] == "Near+"
    assert len({len(line) for line in lines}) == 1  # aligned
    md = format_results([a, b], "markdown").splitlines()
    assert md[0] == "| dataset | images | PSNR-Y | SSIM-Y |"
    assert md[2] == f"| Bench | 4 | {a['metrics']['psnr']:.4f} | {a['metrics']['ssim']:.6f} |"
    loaded = json.loads(format_results([a, b], "json"))
    assert loaded[0]["metrics"] == a["metrics"] and loaded[1]["per_image"] == b["per_image"]
    identical = {**a, "metrics": {"psnr": float("inf"), "ssim": 1.0}}
    assert json.loads(format_results([identical], "json"))[0]["metrics"]["psnr"] == "inf"


# ---------------------------------------------------------------------------------------------------------
# Command line


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Runs the command line in-process: exit status, stdout and stderr."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _report_options(tmp_path: Path) -> list[str]:
    """``--json``, ``--markdown`` and ``--save`` into ``tmp_path`` (r.json, r.md, sr/)."""
    return [
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
        "--save",
        str(tmp_path / "sr"),
    ]


def test_cli_evaluate(
    bench: Path, seemore_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hr_only = tmp_path / "Only"
    (hr_only / "HR").mkdir(parents=True)
    (hr_only / "HR" / "astro.png").write_bytes((bench / "HR" / "astro.png").read_bytes())
    argv = ["evaluate", "-m", str(seemore_path), "--data", str(bench), str(hr_only), "--batch-size", "2"]
    argv += _report_options(tmp_path)
    code, out, err = _main(argv, capsys)
    assert code == 0, err
    expected = evaluate_dataset(load_model(seemore_path), find_benchmark(bench, SCALE), scale=SCALE)
    assert "Only: no LR images for x4; made from HR with MATLAB bicubic" in out
    table = [line.split() for line in out.splitlines() if not line.startswith("note:")]
    assert table[0] == ["dataset", "images", "PSNR-Y", "SSIM-Y"]
    assert table[1] == [
        "Bench",
        "4",
        f"{expected['metrics']['psnr']:.4f}",
        f"{expected['metrics']['ssim']:.6f}",
    ]
    assert table[2][:2] == ["Only", "1"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report[0]["per_image"] == expected["per_image"] and report[1]["lr"] == "bicubic on the fly"
    assert (tmp_path / "r.md").read_text().startswith("| dataset | images | PSNR-Y | SSIM-Y |")
    assert sorted(p.name for p in (tmp_path / "sr" / "Bench").iterdir()) == [
        "astro.png",
        "cat.png",
        "coffee.png",
        "rocket.png",
    ]

    for bad, message in [
        (["--data", str(tmp_path / "nowhere")], "no such folder"),
        (["--data", str(bench), "--scale", "2"], "--scale 2: the model"),
    ]:
        code, out, err = _main(["evaluate", "-m", str(seemore_path), *bad], capsys)
        assert code == 1 and message in err and err.count("\n") == 1, err
    code, out, err = _main(["evaluate", "-m", str(tmp_path / "nope.pth"), "--data", str(bench)], capsys)
    assert code == 1 and "no such file" in err and err.count("\n") == 1


def _write_config(path: Path, bench: Path, weights: Path, *, embedding_dim: int = 36) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            name: test_tiny
            model_type: SRModel
            scale: 4
            num_gpu: 1
            datasets:
              test_1:
                name: Bench
                type: PairedImageDataset
                dataroot_gt: {bench / "HR"}
                dataroot_lq: {bench / "LR_bicubic" / "X4"}
                filename_tmpl: '{{}}x4'
                io_backend:
                  type: disk
            network_g:
              type: SeemoRe
              scale: 4
              in_chans: 3
              num_experts: 3
              img_range: 1.0
              num_layers: 6
              embedding_dim: {embedding_dim}
              use_shuffle: True
              lr_space: exp
              topk: 1
              recursive: 2
              global_kernel_size: 11
            path:
              pretrain_network_g: {weights}
              strict_load_g: true
            val:
              save_img: false
              metrics:
                psnr:
                  type: calculate_psnr
                  crop_border: 4
                  test_y_channel: true
                ssim:
                  type: calculate_ssim
                  crop_border: 4
                  test_y_channel: true
            """
        )
    )


def test_cli_test(
    bench: Path, seemore_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "test.yml"
    _write_config(config, bench, tmp_path / "unset.pth")
    expected = evaluate_dataset(load_model(seemore_path), find_benchmark(bench, SCALE), scale=SCALE)
    # Options and a --KEY=VALUE override after the config.
    argv = ["test", str(config), "--batch-size", "2", f"--path.pretrain_network_g={seemore_path}"]
    code, out, err = _main(argv, capsys)
    assert code == 0, err
    lines = [line.split() for line in out.splitlines() if not line.startswith("ignored: ")]
    assert lines[0] == ["dataset", "images", "PSNR-Y", "SSIM-Y"]
    assert lines[1] == [
        "Bench",
        "4",
        f"{expected['metrics']['psnr']:.4f}",
        f"{expected['metrics']['ssim']:.6f}",
    ]

    # A checkpoint that does not match network_g.
    _write_config(config, bench, seemore_path, embedding_dim=48)
    code, out, err = _main(["test", str(config)], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "does not match network_g" in err and "embedding_dim=36 (network_g: 48)" in err
    code, out, err = _main(["test", str(config), "oops"], capsys)
    assert code == 1 and "'oops': expected an option or a config override" in err


# ---------------------------------------------------------------------------------------------------------
# Distributed


_WORKER = """
import json, sys
import torch
torch.set_num_threads(1)
import torch.distributed as dist
from sisr.checkpoint import load_model
from sisr.evaluate import evaluate_dataset, find_benchmark
dist.init_process_group("gloo")
model = load_model(sys.argv[1])
calls = []
result = evaluate_dataset(
    model,
    find_benchmark(sys.argv[2], 4),
    scale=4,
    batch_size=2,
    distributed=True,
    progress=lambda done, total: calls.append((done, total)),
)
with open(sys.argv[3] + f".{dist.get_rank()}", "w") as f:
    json.dump({"result": result, "calls": calls}, f)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_equals_single_process(bench: Path, seemore_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    out = tmp_path / "result"
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, str(script), str(seemore_path), str(bench), str(out)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    single = evaluate_dataset(load_model(seemore_path), find_benchmark(bench, SCALE), scale=SCALE)
    single = json.loads(json.dumps(single))
    for rank in range(2):
        written = json.loads(Path(f"{out}.{rank}").read_text())
        assert written["result"] == single
        # Each rank ran only its share: 2 of the 4 images (rank 0: astro, coffee; rank 1: cat, rocket).
        assert written["calls"][-1] == [2, 2]


# ---------------------------------------------------------------------------------------------------------
# Nothing finished is lost


def _copy_set(src: Path, dst: Path, names: list[str]) -> Path:
    """A benchmark folder (HR + LR_bicubic/X4) holding some images of ``src``."""
    (dst / "HR").mkdir(parents=True)
    (dst / "LR_bicubic" / "X4").mkdir(parents=True)
    for name in names:
        (dst / "HR" / f"{name}.png").write_bytes((src / "HR" / f"{name}.png").read_bytes())
        lr = src / "LR_bicubic" / "X4" / f"{name}x4.png"
        (dst / "LR_bicubic" / "X4" / lr.name).write_bytes(lr.read_bytes())
    return dst


def _bad_sets(bench: Path, tmp_path: Path) -> list[Path]:
    """A good set, then three bad ones: a size mismatch, a truncated file, an HR image below the scale."""
    mismatch = _copy_set(bench, tmp_path / "Mismatch", ["astro", "cat"])
    (mismatch / "LR_bicubic" / "X4" / "catx4.png").write_bytes(
        (bench / "LR_bicubic" / "X4" / "coffeex4.png").read_bytes()
    )
    truncated = _copy_set(bench, tmp_path / "Truncated", ["astro", "rocket"])
    whole = (bench / "HR" / "rocket.png").read_bytes()
    (truncated / "HR" / "rocket.png").write_bytes(whole[: len(whole) // 2])  # the header is intact
    tiny = tmp_path / "Tiny" / "HR"
    tiny.mkdir(parents=True)
    Image.fromarray(np.zeros((3, 8, 3), np.uint8)).save(tiny / "dot.png")
    return [bench, mismatch, truncated, tiny.parent]


def test_every_image_of_every_set_is_checked_before_the_first_forward_pass(
    bench: Path, tmp_path: Path
) -> None:
    roots = _bad_sets(bench, tmp_path)
    with pytest.raises(SisrError) as caught:
        find_benchmarks(roots, SCALE)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("3 problems in the test sets, nothing was run: ")
    assert re.search(r"cat\.png is 48x40 but LQ .*catx4\.png is 11x13", message)
    assert re.search(r"Truncated: .*rocket\.png: cannot decode image", message)
    assert re.search(r"Tiny: .*dot\.png: image of 3x8 pixels is smaller than scale 4", message)
    # A missing folder is one more problem of the same report.
    with pytest.raises(SisrError, match=r"^4 problems .*nowhere: no such folder; .*Tiny: "):
        find_benchmarks([tmp_path / "nowhere", *roots], SCALE)
    # The list is bounded.
    many = [_copy_set(bench, tmp_path / f"M{i}", ["astro"]) for i in range(12)]
    for root in many:
        (root / "HR" / "astro.png").write_bytes((bench / "HR" / "astro.png").read_bytes()[:200])
    with pytest.raises(SisrError, match=r"^12 problems .*; and 2 more$"):
        find_benchmarks(many, SCALE)


def test_cli_reports_every_bad_image_at_once_and_runs_nothing(
    bench: Path, seemore_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = [str(p) for p in _bad_sets(bench, tmp_path)]
    argv = ["evaluate", "-m", str(seemore_path), "--data", *roots]
    argv += ["--json", str(tmp_path / "r.json"), "--save", str(tmp_path / "sr")]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("sisr: error: 3 problems in the test sets")
    for name in ("catx4.png", "rocket.png", "dot.png"):
        assert name in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "sr").exists()


def test_a_set_that_fails_at_run_time_keeps_the_finished_ones(
    bench: Path, seemore_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    model = load_model(seemore_path)

    calls = [0]

    def out_of_memory(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        calls[0] += 1
        if calls[0] == 4:  # one image at a time: A has 1, B 2, so the 4th is the first of C
            raise RuntimeError("CUDA out of memory (simulated)")

    model.register_forward_pre_hook(out_of_memory)
    monkeypatch.setattr("sisr.checkpoint.load_model", lambda *a, **k: model)
    sets = [
        _copy_set(bench, tmp_path / "A", ["astro"]),
        _copy_set(bench, tmp_path / "B", ["cat", "rocket"]),
        _copy_set(bench, tmp_path / "C", ["astro", "coffee"]),
        _copy_set(bench, tmp_path / "D", ["rocket"]),
    ]
    folders = find_benchmarks(sets, SCALE)
    results, failures = evaluate_datasets(folders, lambda d: evaluate_dataset(model, d, scale=SCALE))
    assert [r["dataset"] for r in results] == ["A", "B", "D"]
    assert failures == [Failure(dataset="C", message="CUDA out of memory (simulated)")]
    with pytest.raises(SisrError, match=r"^1 set failed \(3 finished and reported\): C: CUDA out of memory"):
        raise_failures(failures, finished=len(results))

    calls[0] = 0
    argv = ["evaluate", "-m", "any", "--data", *map(str, sets)]
    argv += _report_options(tmp_path)
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err == "sisr: error: 1 set failed (3 finished and reported): C: CUDA out of memory (simulated)\n"
    table = [line.split() for line in out.splitlines()]
    assert [row[:2] for row in table] == [["dataset", "images"], ["A", "1"], ["B", "2"], ["D", "1"]]
    assert table[1][2] == f"{results[0]['metrics']['psnr']:.4f}"
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["dataset"] for r in report] == ["A", "B", "D"]
    assert report[1]["per_image"] == results[1]["per_image"]
    assert [line.split(" | ")[0] for line in (tmp_path / "r.md").read_text().splitlines()[2:]] == [
        "| A",
        "| B",
        "| D",
    ]
    assert sorted(p.name for p in (tmp_path / "sr" / "B").iterdir()) == ["cat.png", "rocket.png"]


# ---------------------------------------------------------------------------------------------------------
# One datasets_from_config for sisr train and sisr test


def _data_config(path: Path, datasets: str) -> Path:
    path.write_text(
        "name: cfg\nmodel_type: SRModel\nscale: 4\nnetwork_g:\n  type: SeemoRe\n  scale: 4\n"
        "path:\n  pretrain_network_g: ~\nval:\n  metrics:\n    psnr:\n      type: calculate_psnr\n"
        "      crop_border: 4\n      test_y_channel: true\ndatasets:\n" + textwrap.indent(datasets, "  ")
    )
    return path


def test_a_val_entry_is_the_same_set_under_train_test_and_evaluate(bench: Path, tmp_path: Path) -> None:
    from sisr.config import load_config
    from sisr.data.build import datasets_from_config
    from sisr.data.datasets import GTOnlyDataset, PairedImageDataset

    config, _ = load_config(
        _data_config(
            tmp_path / "c.yml",
            f"""\
            train:
              name: crops
              type: PairedImageDataset
              dataroot_gt: {bench / "HR"}
              dataroot_lq: {bench / "LR_bicubic" / "X4"}
              filename_tmpl: '{{}}x4'
              gt_size: 16
              batch_size_per_gpu: 2
            val_1:
              name: Paired
              type: PairedImageDataset
              dataroot_gt: {bench / "HR"}
              dataroot_lq: {bench / "LR_bicubic" / "X4"}
              filename_tmpl: '{{}}x4'
            val_2:
              name: HROnly
              type: GTOnlyDataset
              dataroot_gt: {bench / "HR"}
            """,
        )
    )
    train = datasets_from_config(config, phases=("train",))
    assert list(train) == ["train"] and train["train"].gt_size == 16
    val = datasets_from_config(config, phases=("val", "test"))
    assert [(k, type(d), d.name) for k, d in val.items()] == [
        ("val_1", PairedImageDataset, "Paired"),
        ("val_2", GTOnlyDataset, "HROnly"),  # sisr train refused a GT-only val entry; sisr test took it
    ]
    # The same images and LR as the folder that sisr evaluate finds, for both entries.
    folder = find_benchmark(bench, SCALE)
    for dataset in val.values():
        for i in range(len(folder)):
            assert torch.equal(dataset[i]["lq"], folder[i]["lq"]) and torch.equal(
                dataset[i]["gt"], folder[i]["gt"]
            )

    # Every entry that cannot be built is reported at once, by its key.
    broken, _ = load_config(
        _data_config(
            tmp_path / "broken.yml",
            f"""\
            val_1:
              name: A
              type: PairedImageDataset
              dataroot_gt: {tmp_path / "nowhere"}
              dataroot_lq: {bench / "LR_bicubic" / "X4"}
            test_1:
              name: B
              type: GTOnlyDataset
              dataroot_gt: {tmp_path / "empty"}
            """,
        )
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        SisrError, match=r"^2 datasets cannot be used: datasets\.val_1: .*; datasets\.test_1: no images"
    ):
        datasets_from_config(broken, phases=("val", "test"))


def test_cli_test_checks_every_set_before_running(
    bench: Path, seemore_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _copy_set(bench, tmp_path / "Bad", ["astro", "rocket"])
    whole = (bad / "HR" / "rocket.png").read_bytes()
    (bad / "HR" / "rocket.png").write_bytes(whole[: len(whole) // 2])
    config = tmp_path / "test.yml"
    _write_config(config, bad, seemore_path)
    assert main(["test", str(config)]) == 1
    out, err = capsys.readouterr()
    # Only the keys the config sets without effect are printed: no table, nothing run.
    assert all(line.startswith("ignored: ") for line in out.splitlines())
    assert err.count("\n") == 1
    assert re.match(
        r"sisr: error: 1 problem in the test sets, nothing was run: Bench: .*rocket\.png: cannot decode", err
    )


def test_a_training_set_with_mismatched_pairs_stops_before_training(bench: Path, tmp_path: Path) -> None:
    from sisr.config import load_config
    from sisr.data.build import datasets_from_config

    bad = _copy_set(bench, tmp_path / "Bad", ["astro", "cat", "coffee"])
    for name in ("astro", "cat"):
        (bad / "LR_bicubic" / "X4" / f"{name}x4.png").write_bytes(
            (bench / "LR_bicubic" / "X4" / "coffeex4.png").read_bytes()
        )
    entry = f"""\
        train:
          name: crops
          type: PairedImageDataset
          dataroot_gt: {bad / "HR"}
          dataroot_lq: {bad / "LR_bicubic" / "X4"}
          filename_tmpl: '{{}}x4'
          gt_size: 16
          batch_size_per_gpu: 2
        """
    config, _ = load_config(_data_config(tmp_path / "c.yml", textwrap.dedent(entry)))
    with pytest.raises(SisrError) as caught:
        datasets_from_config(config, phases=("train",))
    message = str(caught.value)
    assert message.startswith("datasets.train: 2 of 3 GT/LQ pairs: GT ") and "\n" not in message
    assert "astro.png is 48x40 but LQ" in message and "cat.png is 48x40 but LQ" in message
