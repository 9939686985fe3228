"""The commands driven by an option file, ``sisr train`` and ``sisr test`` (:mod:`sisr.cli._config`):
overrides anywhere after CONFIG, the ignored keys printed, and SIGTERM during a training run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from sisr.cli import main
from sisr.data.images import write_image
from sisr.imresize import imresize
from sisr.models import build

MMA = {"type": "MMA", "num_feat": 32, "num_block": 1, "img_range": 1.0}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hr/`` with three 32x32 images and ``lr/`` with their x2 bicubic LR; ``mma.pth`` fits MMA."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "hr").mkdir()
    (root / "lr").mkdir()
    for i in range(3):
        hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        write_image(root / "hr" / f"{i}.png", hr)
        lr = np.clip(np.round(imresize(hr.astype(np.float64), 0.5)), 0, 255).astype(np.uint8)
        write_image(root / "lr" / f"{i}x2.png", lr)
    torch.manual_seed(0)
    torch.save({"params": build("mma", _mma_args()).state_dict()}, root / "mma.pth")
    return root


def _mma_args() -> dict[str, Any]:
    return {"upscale": 2, "num_feat": 32, "num_block": 1, "img_range": 1.0}


def _config(folders: Path, tmp_path: Path, **network: Any) -> Path:
    paired = {
        "type": "PairedImageDataset",
        "dataroot_gt": str(folders / "hr"),
        "dataroot_lq": str(folders / "lr"),
        "filename_tmpl": "{}x2",
    }
    cfg = {
        "name": "tiny",
        "scale": 2,
        "manual_seed": 0,
        "network_g": {**MMA, **network},
        "datasets": {
            "train": {
                **paired,
                "name": "train",
                "gt_size": 16,
                "batch_size_per_gpu": 1,
                "num_worker_per_gpu": 0,
            },
            "val": {**paired, "name": "Tiny"},
        },
        "path": {"experiments_root": str(tmp_path / "exp"), "pretrain_network_g": str(folders / "mma.pth")},
        "train": {
            "optim_g": {"type": "Adam", "lr": 1e-3},
            "scheduler": {"type": "MultiStepLR", "milestones": [100000]},
            "total_iter": 4,
            "pixel_opt": {"type": "L1Loss"},
        },
        "val": {
            "val_freq": 1000,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True}},
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2},
    }
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_takes_overrides_after_an_option(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(folders, tmp_path))
    assert main(["train", config, "--dry-run", "train.total_iter=5"]) == 0
    assert "total_iter: 5" in capsys.readouterr().out
    # Any order, both spellings; the last of two overrides of a key wins, as on the command line.
    argv = ["train", config, "train.total_iter=6", "--dry-run", "--train.total_iter=7", "manual_seed=3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "total_iter: 7" in out and "manual_seed: 3" in out
    assert main(["train", config, "--train.total_iter=8", "--dry-run", "train.total_iter=9"]) == 0
    assert "total_iter: 9" in capsys.readouterr().out
    assert not (tmp_path / "exp").exists()


def test_train_refuses_a_word_that_is_neither(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(folders, tmp_path))
    assert main(["train", config, "--dry-run", "oops"]) == 1
    assert capsys.readouterr().err == (
        "sisr: error: 'oops': expected an option or a config override KEY=VALUE\n"
    )
    assert main(["train", config, "--dry-runs"]) == 2  # a mistyped option stays argparse's usage error
    assert "unrecognized arguments: --dry-runs" in capsys.readouterr().err


def test_test_prints_the_keys_it_ignores_and_takes_overrides_anywhere(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The official test_MMA_x3.yml carries network_g.res_scale, which MMA does not take.
    config = str(_config(folders, tmp_path, res_scale=1))
    assert main(["test", config, "--batch-size", "2", "val.metrics.psnr.crop_border=3", "--tile", "16"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("ignored: network_g.res_scale: not an MMA argument")
    assert lines[1].split() == ["dataset", "images", "PSNR-Y"]
    assert lines[2].split()[:2] == ["Tiny", "3"]
    assert "val.metrics.psnr.crop_border: is 3 but scale is 2" in captured.err  # the override after options


# ---------------------------------------------------------------------------------------------------------
# SIGTERM during training


@pytest.mark.slow
def test_sigterm_during_training_leaves_no_temporary_file(folders: Path, tmp_path: Path) -> None:
    config = _config(folders, tmp_path)
    # A checkpoint at every iteration, so that the signal likely lands in or near a write.
    overrides = ["train.total_iter=100000", "logger.save_checkpoint_freq=1", "logger.print_freq=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sisr", "train", str(config), *overrides, "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    models = tmp_path / "exp" / "models"
    assert proc.stdout is not None
    for _ in range(1000):  # one progress line per iteration, until checkpoints are being written
        if not proc.stdout.readline() or len(list(models.glob("net_g_*.pth"))) >= 3:
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stderr) == (143, "sisr: error: terminated\n")
    names = sorted(p.name for p in models.iterdir())
    assert "net_g_latest.pth" in names
    assert [name for name in names if name.startswith(".") or name.endswith(".tmp")] == []
