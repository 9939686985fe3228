"""The training loop: tiny end-to-end runs of SeemoRe and MMA, exact resume, warm starts, DDP on CPU."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data

from sisr.checkpoint import load_model, save_checkpoint
from sisr.cli import main, run_command
from sisr.config import LossConfig, OptimConfig, SchedulerConfig, from_dict, load_config
from sisr.errors import SisrError
from sisr.models import build
from sisr.prepare import make_lr
from sisr.runtime import cpu_info
from sisr.train import (
    EMA,
    _rng_state,
    _set_rng_state,
    load_pretrained,
    make_loss,
    make_optimizer,
    make_scheduler,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SEEMORE = {
    "type": "SeemoRe",
    "num_experts": 3,
    "num_layers": 2,
    "embedding_dim": 16,
    "recursive": 2,  # needs LR patches of at least 16 pixels: gt_size 32 at x2
    "topk": 1,
    "use_shuffle": True,
    "lr_space": "exp",
    "global_kernel_size": 11,
}
MMA = {"type": "MMA", "num_feat": 32, "num_block": 1, "img_range": 1.0}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 64x64 photo crops as HR, their x2 and x3 bicubic LR, and a GT-only folder with a subfolder."""
    root = tmp_path_factory.mktemp("images")
    crops = [
        data.astronaut()[100:164, 180:244],
        data.astronaut()[300:364, 300:364],
        data.chelsea()[60:124, 120:184],
        data.coffee()[150:214, 250:314],
    ]
    (root / "hr").mkdir()
    (root / "gt_only" / "sub").mkdir(parents=True)
    for i, crop in enumerate(crops):
        image = Image.fromarray(np.ascontiguousarray(crop))
        image.save(root / "hr" / f"{i:04d}.png")
        image.save(root / "gt_only" / ("sub" if i % 2 else "") / f"{i:04d}.png")
    make_lr(root / "hr", root / "lr", [2, 3])
    return root


def _config(images: Path, exp: Path, *, network: dict[str, Any], **sections: Any) -> dict[str, Any]:
    paired = {
        "type": "PairedImageDataset",
        "dataroot_gt": str(images / "hr"),
        "dataroot_lq": str(images / "lr" / "X2"),
        "filename_tmpl": "{}x2",
    }
    cfg: dict[str, Any] = {
        "name": "tiny",
        "scale": 2,
        "manual_seed": 5,
        "network_g": network,
        "datasets": {
            "train": {
                "name": "crops",
                **paired,
                "gt_size": 32,
                "batch_size_per_gpu": 2,
                "num_worker_per_gpu": 0,
                "dataset_enlarge_ratio": 2,
            }
        },
        "path": {"experiments_root": str(exp)},
        "train": {
            "ema_decay": 0.9,
            "optim_g": {"type": "Adam", "lr": 2e-3, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [8], "gamma": 0.5},
            "total_iter": 12,
            "pixel_opt": {"type": "L1Loss"},
            "fft_opt": {"type": "FFTLoss", "loss_weight": 0.1},
        },
        "logger": {"print_freq": 4, "save_checkpoint_freq": 6},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    cfg["datasets"]["val"] = {"name": "val", **paired}
    if "val" not in cfg:
        cfg["datasets"].pop("val")
    return cfg


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(exp: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (exp / "log.jsonl").read_text().splitlines()]


def _run_cli(argv: list[str]) -> int:
    return run_command(argv)  # as `sisr` runs it, but a SisrError propagates


# ---------------------------------------------------------------------------------------------------------
# Pieces


def test_fft_loss_is_l1_over_real_and_imaginary_parts() -> None:
    g = torch.Generator().manual_seed(0)
    out, target = torch.rand(2, 3, 8, 10, generator=g), torch.rand(2, 3, 8, 10, generator=g)
    a, b = np.fft.rfft2(out.double().numpy()), np.fft.rfft2(target.double().numpy())
    diffs = np.concatenate([np.abs(a.real - b.real).ravel(), np.abs(a.imag - b.imag).ravel()])
    loss = make_loss(_loss(type="FFTLoss", loss_weight=0.1))
    assert float(loss(out, target)) == pytest.approx(0.1 * diffs.mean(), rel=1e-5)
    loss_sum = make_loss(_loss(type="FFTLoss", reduction="sum"))
    assert float(loss_sum(out, target)) == pytest.approx(diffs.sum(), rel=1e-5)
    charbonnier = make_loss(_loss(type="CharbonnierLoss", eps=1e-3, reduction="none"))
    expected = np.sqrt((out - target).double().numpy() ** 2 + 1e-3)
    np.testing.assert_allclose(charbonnier(out, target).numpy(), expected, rtol=1e-5)
    # Without eps, BasicSR's 1e-12, filled in once by the config reader.
    default = make_loss(_loss(type="CharbonnierLoss", reduction="none"))
    assert _loss(type="CharbonnierLoss").eps == 1e-12
    expected = np.sqrt((out - target).double().numpy() ** 2 + 1e-12)
    np.testing.assert_allclose(default(out, target).numpy(), expected, rtol=1e-5)


# Pieces of a config are built as a file's would be: through the reader, which fills in the defaults.
def _loss(**values: Any) -> LossConfig:
    return from_dict(LossConfig, values, "train.pixel_opt")


def _scheduler(**values: Any) -> SchedulerConfig:
    return from_dict(SchedulerConfig, values, "train.scheduler")


def test_optimizer_defaults_come_from_the_config() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    adam = make_optimizer(params, from_dict(OptimConfig, {"type": "Adam", "lr": 1e-3}, "train.optim_g"))
    adamw = make_optimizer(params, from_dict(OptimConfig, {"type": "AdamW", "lr": 1e-3}, "train.optim_g"))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0.0
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.01
    # gamma's default (0.1) is the config's too.
    assert _scheduler(type="MultiStepLR", milestones=[2]).gamma == 0.1
    assert _lrs(_scheduler(type="MultiStepLR", milestones=[2]), 4) == pytest.approx([1, 1, 0.1, 0.1])


def _lrs(cfg: SchedulerConfig | None, steps: int, *, warmup: int = -1) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, cfg, warmup_iter=warmup)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_follow_basicsr_formulas() -> None:
    cosine = _scheduler(
        type="CosineAnnealingRestartLR", periods=[4, 6], restart_weights=[1.0, 0.5], eta_min=0.1
    )
    expected = []
    for t in range(10):  # BasicSR: cycle 0 covers t <= 4, cycle 1 starts from t = 4
        start, period, weight = (0, 4, 1.0) if t <= 4 else (4, 6, 0.5)
        expected.append(0.1 + weight * 0.45 * (1 + math.cos(math.pi * (t - start) / period)))
    assert _lrs(cosine, 10) == pytest.approx(expected)
    steps = _scheduler(type="MultiStepLR", milestones=[2, 4, 4], gamma=0.5)
    assert _lrs(steps, 6) == pytest.approx([1, 1, 0.5, 0.5, 0.125, 0.125])
    restart = _scheduler(
        type="MultiStepRestartLR", milestones=[2, 5], gamma=0.5, restarts=[0, 4], restart_weights=[1, 0.8]
    )
    assert _lrs(restart, 7) == pytest.approx([1, 1, 0.5, 0.5, 0.8, 0.4, 0.4])
    # Warm-up from lr / 4 to lr over 4 iterations, then the schedule from its own start.
    assert _lrs(steps, 9, warmup=4) == pytest.approx([0.25, 0.4375, 0.625, 0.8125, 1, 1, 0.5, 0.5, 0.125])


def test_ema_averages_parameters_and_copies_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = EMA(model, decay=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.rand(2, 3, 8, 8))  # training mode: updates the BatchNorm running statistics
    ema.update(model, 0)
    for name, value in ema.module.named_parameters():
        torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * (before[name] + 1.0))
    for name, value in ema.module.named_buffers():
        assert torch.equal(value, model.state_dict()[name])
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_ema_warmup_follows_the_configured_decay_after_a_short_ramp() -> None:
    model = torch.nn.Linear(2, 2, bias=False)
    ema = EMA(model, decay=0.999, warmup=True)
    assert [ema.decay_at(t) for t in (0, 1, 8)] == pytest.approx([1 / 10, 2 / 11, 9 / 18])
    assert ema.decay_at(10**6) == 0.999  # (1 + t) / (10 + t) passes 0.999 at t = 8991
    assert EMA(model, decay=0.999).decay_at(0) == 0.999
    # After 600 updates towards new weights, the warmed-up average has forgotten the initial ones; the
    # plain one still holds 0.999**600 = 55% of them.
    start = model.weight.detach().clone()
    plain = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.add_(1.0)
    for t in range(600):
        ema.update(model, t)
        plain.update(model, t)
    torch.testing.assert_close(plain.module.weight - start, torch.full_like(start, 1 - 0.999**600))
    assert ((ema.module.weight - start) > 0.95).all()


def test_rng_states_survive_a_weights_only_round_trip(tmp_path: Path) -> None:
    import random

    torch.save({"rng": _rng_state()}, tmp_path / "rng.pth")
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    _set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == first


# ---------------------------------------------------------------------------------------------------------
# End to end


def test_seemore_trains_validates_and_saves_loadable_checkpoints(images: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    cfg = _config(
        images,
        exp,
        network=SEEMORE,
        train={"total_iter": 40, "warmup_iter": 4, "scheduler": {"type": "MultiStepLR", "milestones": [30]}},
        val={"val_freq": 20, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}},
        logger={"print_freq": 5, "save_checkpoint_freq": 20},
    )
    config, _ = load_config(_write(tmp_path / "c.yml", cfg))
    result = train(config)
    assert result.step == 40

    records = _records(exp)
    losses = [r["l_pix"] for r in records if "l_pix" in r]
    assert len(losses) == 8 and all(r["l_fft"] > 0 for r in records if "l_fft" in r)
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses
    assert [r["lr"] for r in records if "lr" in r][-1] == pytest.approx(2e-4)  # milestone 30 after warm-up
    vals = [r for r in records if "val" in r]
    assert [r["iter"] for r in vals] == [20, 40]
    assert vals[1]["val"]["val"]["psnr"] > vals[0]["val"]["val"]["psnr"]

    models = exp / "models"
    assert sorted(p.name for p in models.iterdir()) == ["net_g_20.pth", "net_g_40.pth", "net_g_latest.pth"]
    assert (models / "net_g_40.pth").read_bytes() == (models / "net_g_latest.pth").read_bytes()
    ckpt = torch.load(models / "net_g_latest.pth", weights_only=True)
    assert ckpt["step"] == 40 and ckpt["arch"] == "seemore" and ckpt["config"]["name"] == "tiny"
    assert isinstance(ckpt["rng"]["numpy"][1], torch.Tensor)
    # What the run computed on: this CPU, by the name the benchmark tables give it, and this torch.
    assert ckpt["hardware"] == [
        {
            "from_iteration": 0,
            "processes": 1,
            "device": "cpu",
            "name": cpu_info().describe(),
            "cpu": cpu_info().describe(),
            "torch": str(torch.__version__),
        }
    ]
    for k, v in result.model.state_dict().items():
        assert torch.equal(ckpt["params"][k], v)
    # load_model prefers params_ema, and those are the EMA weights, not the raw ones.
    loaded = load_model(models / "net_g_latest.pth")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ckpt["params_ema"][k])
    assert result.ema is not None
    assert any(not torch.equal(ckpt["params_ema"][k], v) for k, v in ckpt["params"].items())
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(lq), result.ema(lq))


def test_mma_trains_on_gt_only_images(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "exp", network=MMA, train={"total_iter": 24, "fft_opt": None})
    cfg["datasets"]["train"] = {
        "name": "gt",
        "type": "GTOnlyDataset",
        "dataroot_gt": str(images / "gt_only"),
        "gt_size": 32,
        "batch_size_per_gpu": 2,
        "num_worker_per_gpu": 0,
        "dataset_enlarge_ratio": 2,
    }
    config, _ = load_config(_write(tmp_path / "c.yml", cfg), ["train.fft_opt=~", "train.grad_clip=0.5"])
    train(config)
    records = _records(tmp_path / "exp")
    losses = [r["l_pix"] for r in records]
    assert len(losses) == 6 and "l_fft" not in records[0] and "grad_norm" in records[0]
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses
    assert load_model(tmp_path / "exp" / "models" / "net_g_latest.pth").__class__.__name__ == "MMA"


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "whole", network=SEEMORE)  # 4 batches per epoch; stop mid-epoch 2
    path = _write(tmp_path / "c.yml", cfg)
    assert _run_cli(["train", str(path)]) == 0
    whole = torch.load(tmp_path / "whole" / "models" / "net_g_12.pth", weights_only=True)
    with pytest.raises(SisrError, match="holds checkpoints of an earlier run; continue it with --resume"):
        _run_cli(["train", str(path)])  # a second fresh run would overwrite them

    exp = str(tmp_path / "parts")
    stopped = ["--train.total_iter=6", f"--path.experiments_root={exp}"]
    assert _run_cli(["train", str(path), *stopped]) == 0
    assert not (tmp_path / "parts" / "models" / "net_g_12.pth").exists()
    assert _run_cli(["train", str(path), f"path.experiments_root={exp}", "--resume"]) == 0
    parts = torch.load(tmp_path / "parts" / "models" / "net_g_12.pth", weights_only=True)

    assert parts["step"] == whole["step"] == 12
    for key in ("params", "params_ema"):
        assert whole[key].keys() == parts[key].keys()
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, parts[key][name]), (key, name)
    for state in whole["optimizer"]["state"]:
        for k, v in whole["optimizer"]["state"][state].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(parts["optimizer"]["state"][state][k]))
    assert whole["scheduler"]["_last_lr"] == parts["scheduler"]["_last_lr"]
    # The interrupted run's log shows the resumed half only once, after the first half.
    assert [r["iter"] for r in _records(tmp_path / "parts")] == [4, 6, 8, 12]


def test_a_time_limit_stops_with_a_checkpoint_that_resumes_exactly(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(images, tmp_path / "whole", network=SEEMORE)  # checkpoints at 12 only
    path = _write(tmp_path / "c.yml", cfg)
    assert _run_cli(["train", str(path)]) == 0
    whole = torch.load(tmp_path / "whole" / "models" / "net_g_12.pth", weights_only=True)

    # A limit that has run out after the first iteration: the run stops there, with a checkpoint.
    exp = tmp_path / "parts"
    assert _run_cli(["train", str(path), f"path.experiments_root={exp}", "--time-limit", "1e-9"]) == 0
    assert "time limit of 0m00s reached after iteration 1 of 12" in capsys.readouterr().out
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["net_g_1.pth", "net_g_latest.pth"]
    assert torch.load(exp / "models" / "net_g_latest.pth", weights_only=True)["step"] == 1
    # A limit that does not run out changes nothing; the resumed run is the uninterrupted one, bit for bit.
    result = train(load_config(path, [f"path.experiments_root={exp}"])[0], resume=True, time_limit=3600.0)
    assert result.step == 12
    parts = torch.load(exp / "models" / "net_g_12.pth", weights_only=True)
    for key in ("params", "params_ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, parts[key][name]), (key, name)
    # Each start records its stretch: the resumed one from iteration 1.
    assert [h["from_iteration"] for h in parts["hardware"]] == [0, 1]
    assert [h["device"] for h in parts["hardware"]] == ["cpu", "cpu"]

    for bad in ("0", "-1", "nan", "soon"):
        assert main(["train", str(path), "--time-limit", bad]) == 2  # argparse's usage error
        assert "--time-limit: " in capsys.readouterr().err
    with pytest.raises(SisrError, match="the time limit must be a positive number of seconds, got 0"):
        train(load_config(path)[0], time_limit=0)


@pytest.mark.slow
def test_resume_with_degradations_on_reaches_the_same_weights(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "whole", network=SEEMORE, train={"total_iter": 6})
    train_entry = cfg["datasets"]["train"]
    for key in ("dataroot_lq", "filename_tmpl"):
        train_entry.pop(key)
    train_entry.update(type="GTOnlyDataset", gt_size=48, degradation={"gt_usm": True})
    path = _write(tmp_path / "c.yml", cfg)
    assert _run_cli(["train", str(path)]) == 0
    whole = torch.load(tmp_path / "whole" / "models" / "net_g_6.pth", weights_only=True)
    exp = str(tmp_path / "parts")
    assert _run_cli(["train", str(path), "--train.total_iter=3", f"--path.experiments_root={exp}"]) == 0
    assert _run_cli(["train", str(path), f"path.experiments_root={exp}", "--resume"]) == 0
    parts = torch.load(tmp_path / "parts" / "models" / "net_g_6.pth", weights_only=True)
    for name, tensor in whole["params"].items():
        assert torch.equal(tensor, parts["params"][name]), name


def test_non_strict_warm_start_reports_skipped_tensors(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {k: v for k, v in SEEMORE.items() if k != "type"}
    x2 = build("seemore", {**args, "scale": 2})
    ckpt = tmp_path / "x2.pth"
    save_checkpoint(ckpt, arch="seemore", args={**args, "scale": 2}, params=x2.state_dict())

    x3 = build("seemore", {**args, "scale": 3})
    with pytest.raises(SisrError, match=r"does not fit the network \(2 tensors differ.*strict_load_g: false"):
        load_pretrained(x3, str(ckpt), param_key="params", strict=True)
    with pytest.raises(SisrError, match=r"no 'params_ema' weights \(it has: params\)"):
        load_pretrained(x3, str(ckpt), param_key="params_ema", strict=False)
    skipped = load_pretrained(x3, str(ckpt), param_key="params", strict=False)
    own = x3.state_dict()
    differing = {k for k in own if own[k].shape != x2.state_dict()[k].shape}
    assert differing and {s.split(":")[0] for s in skipped} == differing
    for k, v in x2.state_dict().items():
        if k not in differing:
            assert torch.equal(own[k], v)

    # Through a run: the skipped tensors are printed by name.
    cfg = _config(images, tmp_path / "exp", network=SEEMORE, train={"total_iter": 1})
    cfg["path"].update(pretrain_network_g=str(ckpt), strict_load_g=False)
    x3_data = [
        "scale=3",
        "network_g.scale=3",
        f"datasets.train.dataroot_lq={images / 'lr' / 'X3'}",
        "datasets.train.filename_tmpl='{}x3'",
        "datasets.train.gt_size=48",  # LR patches of 16
    ]
    config, _ = load_config(_write(tmp_path / "c.yml", cfg), x3_data)
    assert train(config).step == 1
    out = capsys.readouterr().out
    for name in differing:
        assert f"skipped {name}: shape" in out


def test_bad_configs_and_options_are_one_line_errors(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "exp", network=SEEMORE)
    path = _write(tmp_path / "c.yml", cfg)
    cases = {
        "--train.total_iter=abc": "train.total_iter: expected an integer",
        "--datasets.train.gt_size=33": "not a multiple of scale",
        "--train.optim_g.betass=[0.9,0.9]": "did you mean 'betas'",
        "--path.pretrain_network_g=/nonexistent.pth": "/nonexistent.pth: no such file",
        "--resume=/nonexistent.pth": "no checkpoint to resume",
        "--train.pixel_opt.reduction=none": "no single number to minimise",
    }
    for option, message in cases.items():
        with pytest.raises(SisrError, match=message) as err:
            _run_cli(["train", str(path), option])
        assert "\n" not in str(err.value)
    with pytest.raises(SisrError, match="no checkpoint to resume"):
        _run_cli(["train", str(path), "--resume"])
    assert not (tmp_path / "exp" / "models" / "net_g_latest.pth").exists()


@pytest.mark.parametrize("network", [SEEMORE, MMA], ids=["seemore", "mma"])
def test_bf16_autocast_is_opt_in(images: Path, tmp_path: Path, network: dict[str, Any]) -> None:
    cfg = _config(images, tmp_path / "exp", network=network, train={"total_iter": 2})
    cfg["logger"] = {"print_freq": 1, "save_checkpoint_freq": 2}
    first = {}
    for bf16 in (False, True):
        exp = tmp_path / f"bf16_{bf16}"
        overrides = [f"train.bf16={str(bf16).lower()}", f"path.experiments_root={exp}"]
        config, _ = load_config(_write(tmp_path / "c.yml", cfg), overrides)
        train(config)
        first[bf16] = _records(exp)[0]["l_pix"]
    # Same weights, same batch: only the reduced precision of the forward pass separates the two.
    assert first[True] != first[False]
    assert first[True] == pytest.approx(first[False], rel=0.05)


def test_dry_run_prints_the_resolved_config_and_trains_nothing(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "c.yml", _config(images, tmp_path / "exp", network=MMA))
    assert _run_cli(["train", str(path), "--dry-run", "--train.total_iter=77"]) == 0
    out = capsys.readouterr().out
    assert "total_iter: 77" in out and "# network: MMA" in out
    assert not (tmp_path / "exp").exists()


# ---------------------------------------------------------------------------------------------------------
# Non-finite numbers, devices, bad resume files, failed starts: one line, nothing written


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``sisr.cli.main`` and its stderr, which must be one line when it fails."""
    from sisr.cli import main

    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    if code != 0:
        assert err.startswith("sisr: error: ") and err.count("\n") == 1, err
    return code, err


def test_non_finite_numbers_in_the_config_are_refused(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp"
    path = _write(tmp_path / "c.yml", _config(images, exp, network=MMA))
    for value in (".nan", ".inf", "-.inf", "1e400"):
        code, err = _main(["train", str(path), f"train.optim_g.lr={value}"], capsys)
        assert code == 1 and "train.optim_g.lr: expected a finite number" in err
    assert not exp.exists()


def test_a_run_whose_loss_turns_non_finite_stops_and_saves_nothing(images: Path, tmp_path: Path) -> None:
    # Adam's steps are about lr long: at 1e30 the weights overflow float32 within a few iterations.
    exp = tmp_path / "exp"
    cfg = _config(images, exp, network=MMA, train={"ema_decay": 0.0, "fft_opt": None})
    config, _ = load_config(_write(tmp_path / "c.yml", cfg), ["train.optim_g.lr=1e30"])
    with pytest.raises(
        SisrError, match=r"^iteration [1-4]: the loss is not finite \(l_pix (nan|inf)\)"
    ) as err:
        train(config)
    assert "\n" not in str(err.value)
    assert list((exp / "models").iterdir()) == []  # print_freq 4 comes before save_checkpoint_freq 6
    # The same through the command line, with the FFT loss: every term is named.
    config, _ = load_config(
        _write(tmp_path / "c.yml", {**cfg, "train": {**cfg["train"], "fft_opt": {"type": "FFTLoss"}}}),
        ["train.optim_g.lr=1e30", f"path.experiments_root={tmp_path / 'exp2'}"],
    )
    with pytest.raises(SisrError, match=r"^iteration [1-4]: the loss is not finite \(l_pix \S+, l_fft \S+\)"):
        train(config)


def test_non_finite_weights_are_never_saved(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sisr.train

    # An optimizer whose last update leaves an infinite weight: every loss computed was finite (each is
    # computed before its update), the weights that would be saved are not.
    real = sisr.train.make_optimizer

    def poisoned(params: Any, cfg: Any) -> torch.optim.Optimizer:
        optimizer = real(params, cfg)

        def poison(*_: Any) -> None:
            with torch.no_grad():
                optimizer.param_groups[0]["params"][0].view(-1)[0] = float("inf")

        optimizer.register_step_post_hook(poison)
        return optimizer

    monkeypatch.setattr(sisr.train, "make_optimizer", poisoned)
    exp = tmp_path / "exp"
    cfg = _config(images, exp, network=MMA, train={"total_iter": 1})
    config, _ = load_config(_write(tmp_path / "c.yml", cfg))
    with pytest.raises(SisrError, match=r"^iteration 1: the weights \(params\) hold non-finite values"):
        train(config)
    assert list((exp / "models").iterdir()) == []
    # A rate so large that Adam's step leaves float32 is named, not a traceback.
    monkeypatch.setattr(sisr.train, "make_optimizer", real)
    config, _ = load_config(_write(tmp_path / "c.yml", cfg), ["train.optim_g.lr=1e39"])
    with pytest.raises(
        SisrError, match=r"^iteration 1: the optimizer's step overflows float32; train.optim_g.lr 1e\+39"
    ):
        train(config)


def test_bad_devices_are_one_line_errors(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp"
    path = _write(tmp_path / "c.yml", _config(images, exp, network=MMA))
    config, _ = load_config(path)
    with pytest.raises(SisrError, match=r"^unknown device 'gpu' \(use cpu, cuda, cuda:N or mps\)$"):
        train(config, device="gpu")
    bad = ["gpu", "cuda:x", "banana", "cuda:7"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        code, err = _main(["train", str(path), "--device", device], capsys)
        assert code == 1 and f"'{device}'" in err, err
    assert not exp.exists()


class _Code:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_bad_resume_files_are_one_line_errors_and_run_nothing(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    # A real checkpoint, to truncate.
    good_exp = tmp_path / "good"
    path = _write(tmp_path / "c.yml", _config(images, good_exp, network=MMA, train={"total_iter": 1}))
    assert _main(["train", str(path)], capsys)[0] == 0
    whole = (good_exp / "models" / "net_g_1.pth").read_bytes()

    marker = tmp_path / "pwned"
    files = {
        "garbage": (bytes(range(256)) * 40, "not a PyTorch checkpoint"),
        "truncated": (whole[: len(whole) // 2], "not a PyTorch checkpoint"),
        "code": (pickle.dumps({"format": "sisr", "params": _Code(marker)}), "refused: the file holds Python"),
        "weights only": (None, "not a checkpoint written by sisr"),
    }
    exp = tmp_path / "exp"
    for name, (content, message) in files.items():
        bad = tmp_path / f"{name}.pth"
        if content is None:
            torch.save({"params": {"w": torch.zeros(1)}}, bad)  # weights, but no training state
        else:
            bad.write_bytes(content)
        code, err = _main(["train", str(path), f"path.experiments_root={exp}", f"--resume={bad}"], capsys)
        assert code == 1 and message in err and str(bad) in err, (name, err)
    assert not marker.exists()
    assert not exp.exists()


def test_a_newer_checkpoint_version_is_refused_for_resuming(images: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    path = _write(tmp_path / "c.yml", _config(images, exp, network=MMA, train={"total_iter": 1}))
    config, _ = load_config(path)
    train(config)
    latest = exp / "models" / "net_g_latest.pth"
    state = torch.load(latest, weights_only=True)
    torch.save({**state, "version": 99}, latest)
    config, _ = load_config(path, ["train.total_iter=2"])
    with pytest.raises(
        SisrError,
        match=r"written by a newer sisr \(checkpoint format version 99; this sisr reads versions up to 1\)",
    ):
        train(config, resume=True)
    torch.save({**state, "optimizer": {"state": {}, "param_groups": "x"}}, latest)
    with pytest.raises(SisrError, match=r"its 'optimizer' entry is damaged or does not fit this run$"):
        train(config, resume=True)


def test_a_failed_start_leaves_no_experiment_folder(images: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    path = _write(tmp_path / "c.yml", _config(images, exp, network=MMA))
    cases = {
        "datasets.train.dataroot_gt=/nonexistent/hr": "/nonexistent/hr",
        "path.pretrain_network_g=/nonexistent.pth": "/nonexistent.pth",
        "train.pixel_opt.reduction=none": "no single number to minimise",
    }
    for override, message in cases.items():
        config, _ = load_config(path, [override])
        with pytest.raises(SisrError, match=message):
            train(config)
        assert not exp.exists(), override
    config, _ = load_config(path)
    with pytest.raises(SisrError, match="unknown device"):
        train(config, device="gpu")
    assert not exp.exists()
    # An existing experiment folder is never removed, nor added to, by a start that fails.
    exp.mkdir()
    (exp / "notes.txt").write_text("mine")
    config, _ = load_config(path, ["path.pretrain_network_g=/nonexistent.pth"])
    with pytest.raises(SisrError):
        train(config)
    assert [p.name for p in exp.iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------------------------------------------------
# Two processes on CPU (Gloo on 127.0.0.1)

_WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import sisr.train as T
    from sisr.config import load_config

    torch.set_num_threads(1)
    writes = []
    for name in ("save_checkpoint", "atomic_write"):
        original = getattr(T, name)
        def spy(path, *args, _original=original, **kwargs):
            writes.append(str(path))
            return _original(path, *args, **kwargs)
        setattr(T, name, spy)
    config, _ = load_config(sys.argv[1])
    result = T.train(config, time_limit=float(sys.argv[3]) if len(sys.argv) > 3 else None)
    rank = os.environ["RANK"]
    torch.save(
        {"params": result.model.state_dict(), "ema": result.ema.state_dict(), "writes": writes},
        os.path.join(sys.argv[2], f"rank{rank}.pt"),
    )
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_worker(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Runs _WORKER in two processes on CPU (Gloo): it trains `path` and saves each rank's result in `out`."""
    worker = out / "worker.py"
    worker.write_text(_WORKER)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            str(worker),
            str(path),
            str(out),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_identical_and_only_rank0_writes(images: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    val = {"val_freq": 6, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}}
    cfg = _config(images, exp, network=SEEMORE, train={"total_iter": 6}, val=val)
    cfg["logger"] = {"print_freq": 3, "save_checkpoint_freq": 6}
    path = _write(tmp_path / "c.yml", cfg)
    proc = _torchrun_worker(path, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in ("params", "ema"):
        for name, tensor in ranks[0][key].items():
            assert torch.equal(tensor, ranks[1][key][name]), (key, name)
    assert ranks[1]["writes"] == []
    assert sorted(Path(p).name for p in ranks[0]["writes"]) == [
        "config.yml",
        "net_g_6.pth",
        "net_g_latest.pth",
    ]
    ckpt = torch.load(exp / "models" / "net_g_latest.pth", weights_only=True)
    assert ckpt["world_size"] == 2
    for name, tensor in ckpt["params"].items():
        assert torch.equal(tensor, ranks[0]["params"][name])
    records = _records(exp)
    assert [r["iter"] for r in records] == [3, 6, 6]  # one log, not one per rank
    # Validation is sharded over the ranks (4 images, 2 each) and gives the number of a single process.
    from sisr.data.datasets import PairedImageDataset
    from sisr.evaluate import MetricSpec, evaluate_dataset

    dataset = PairedImageDataset(
        gt_root=images / "hr", lq_root=images / "lr" / "X2", scale=2, filename_tmpl="{}x2"
    )
    ema = load_model(exp / "models" / "net_g_latest.pth")
    spec = {"psnr": MetricSpec(kind="psnr", crop_border=2, y_channel=False)}
    alone = evaluate_dataset(ema, dataset, scale=2, metrics=spec)
    assert records[2]["val"]["val"]["psnr"] == pytest.approx(alone["metrics"]["psnr"], rel=1e-9)
    assert proc.stdout.count("[iter 6/6]") == 1
    # The weights moved: the run trained (rather than e.g. every rank skipping its steps).
    fresh = build("seemore", {**{k: v for k, v in SEEMORE.items() if k != "type"}, "scale": 2})
    assert any(not torch.equal(v, ranks[0]["params"][k]) for k, v in fresh.state_dict().items())


@pytest.mark.slow
def test_two_processes_stop_together_at_a_time_limit(images: Path, tmp_path: Path) -> None:
    # Checked at the progress lines, rank 0 deciding: both ranks stop after iteration 3 of 12 (no hang,
    # the same weights), and rank 0 alone writes that iteration's checkpoint.
    exp = tmp_path / "exp"
    cfg = _config(images, exp, network=SEEMORE)
    cfg["logger"] = {"print_freq": 3, "save_checkpoint_freq": 12}
    proc = _torchrun_worker(_write(tmp_path / "c.yml", cfg), tmp_path, "1e-9")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, tensor in ranks[0]["params"].items():
        assert torch.equal(tensor, ranks[1]["params"][name]), name
    assert ranks[1]["writes"] == []
    assert sorted(Path(p).name for p in ranks[0]["writes"]) == [
        "config.yml",
        "net_g_3.pth",
        "net_g_latest.pth",
    ]
    assert torch.load(exp / "models" / "net_g_latest.pth", weights_only=True)["step"] == 3
    assert proc.stdout.count("reached after iteration 3 of 12") == 1
