"""Typed configs: the shipped option files, the official ones, BasicSR-style keys, errors and overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sisr.config import (
    Config,
    dry_run,
    dump_config,
    load_config,
    network_args,
    parse_yaml,
    unset_paths,
    validate_for_testing,
    validate_for_training,
)
from sisr.errors import SisrError
from sisr.models import PRESETS, SCALE_ARG, create_model

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# The paper settings; configs/shipped/ holds the CPU recipes of the shipped models and
# configs/trials/ those of runs the README reports on without shipping them, tested separately.
REPO_CONFIGS = sorted(p for p in CONFIGS.glob("*/*.yml") if p.parent.name in ("mma", "seemore"))
SHIPPED_CONFIGS = sorted(CONFIGS.glob("shipped/*.yml"))
TRIAL_CONFIGS = sorted(CONFIGS.glob("trials/*.yml"))

# ---------------------------------------------------------------------------------------------------------
# BasicSR-style option files written for these tests, with every key the official MMA and SeemoRe option
# files use (test_official_keys_are_covered checks it against the copies in tests/fixtures/official).

TRAIN_GT_ONLY = """
name: pretrain_like
model_type: SRModel
scale: 2
num_gpu: 1
manual_seed: 10
datasets:
  train:
    name: ImageNet
    type: ImageNetPairedDataset
    dataroot_gt: ~
    io_backend:
      type: disk
    gt_size: 128
    use_hflip: true
    use_rot: true
    use_shuffle: true
    num_worker_per_gpu: 4
    batch_size_per_gpu: 4
    dataset_enlarge_ratio: 1
    prefetch_mode: cuda
    pin_memory: True
  val:
    name: Set5
    type: PairedImageDataset
    dataroot_gt: ~
    dataroot_lq: ~
    io_backend:
      type: disk
network_g:
  type: MMA
  num_in_ch: 3
  num_out_ch: 3
  num_feat: 32
  num_block: 2
  upscale: 2
  img_range: 1.
  rgb_mean: [0.4488, 0.4371, 0.4040]
path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~
train:
  ema_decay: 0.999
  optim_g:
    type: Adam
    lr: !!float 2e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [300000, 500000, 650000, 700000, 750000]
    gamma: 0.5
  total_iter: 800000
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean
val:
  val_freq: !!float 5e3
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 2
      test_y_channel: true
    ssim:
      type: calculate_ssim
      crop_border: 2
      test_y_channel: true
logger:
  print_freq: 100
  save_checkpoint_freq: !!float 5e4
  use_tb_logger: true
  wandb:
    project: ~
    resume_id: ~
dist_params:
  backend: nccl
  port: 29500
"""

TRAIN_PAIRED = """
name: warm_start_like
model_type: SRModel
scale: 3
num_gpu: auto
manual_seed: 10
datasets:
  train:
    task: SR
    name: DF2K
    type: PairedImageDataset
    dataroot_gt: datasets/DF2K/HR
    dataroot_lq: datasets/DF2K/LR_bicubic/X3
    filename_tmpl: '{}x3'
    io_backend:
      type: disk
    gt_size: 192
    use_hflip: True
    use_rot: True
    use_shuffle: True
    num_worker_per_gpu: 18
    batch_size_per_gpu: 32
    dataset_enlarge_ratio: 50
    prefetch_mode: cuda
    pin_memory: True
  val:
    task: SR
    name: Set5
    type: PairedImageDataset
    dataroot_gt: datasets/benchmark/Set5/HR
    dataroot_lq: datasets/benchmark/Set5/LR_bicubic/X3
    filename_tmpl: '{}x3'
    io_backend:
      type: disk
network_g:
  type: SeemoRe
  scale: 3
  in_chans: 3
  num_experts: 3
  img_range: 1.
  num_layers: 6
  embedding_dim: 36
  use_shuffle: True
  lr_space: exp
  topk: 1
  recursive: 2
  global_kernel_size: 11
path:
  pretrain_network_g: checkpoints/x2/net_g_500000.pth
  strict_load_g: False
  resume_state: ~
train:
  optim_g:
    type: Adam
    lr: !!float 1e-3
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [250000, 400000, 450000, 475000]
    gamma: 0.5
  total_iter: 500000
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean
  fft_opt:
    type: FFTLoss
    loss_weight: 0.1
    reduction: mean
val:
  val_freq: !!float 5e3
  save_img: False
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 3
      test_y_channel: True
logger:
  print_freq: 200
  save_checkpoint_freq: !!float 5e3
  use_tb_logger: True
  wandb:
    project: ~
    resume_id: ~
dist_params:
  backend: nccl
  port: 29500
"""

TEST_STYLE = """
name: test_like
model_type: SRModel
scale: 3
num_gpu: 1
manual_seed: 10
datasets:
  test_1:  # the 1st test dataset
    task: SR
    name: Set5
    type: PairedImageDataset
    dataroot_gt: ~
    dataroot_lq: ~
    filename_tmpl: '{}x3'
    io_backend:
      type: disk
  test_2:
    name: Manga109
    type: PairedImageDataset
    dataroot_gt: ~
    dataroot_lq: ~
    filename_tmpl: '{}_LRBI_x3'
    io_backend:
      type: disk
network_g:
    type: MMA
    num_in_ch: 3
    num_out_ch: 3
    num_feat: 32
    num_block: 2
    upscale: 3
    res_scale: 0.1
    img_range: 1.
    rgb_mean: [0.4488, 0.4371, 0.4040]
path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~
val:
  save_img: true
  suffix: ~  # add suffix to saved images, if None, use exp name
  use_chop: True
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 3
      test_y_channel: true
    ssim:
      type: calculate_ssim
      crop_border: 3
      test_y_channel: true
"""


def write(tmp_path: Path, text: str, name: str = "opt.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> tuple[Config, list[Any]]:
    return load_config(write(tmp_path, text), overrides)


def edited(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ---------------------------------------------------------------------------------------------------------
# The shipped configs


def test_every_setting_is_shipped() -> None:
    names = {p.name for p in REPO_CONFIGS}
    for s in (2, 3, 4):
        assert {f"train_MMA_x{s}_pretrain.yml", f"train_MMA_x{s}_finetune.yml", f"test_MMA_x{s}.yml"} <= names
        for v in "TBL":
            assert {f"train_SeemoRe_{v}_X{s}.yml", f"test_SeemoRe_{v}_X{s}.yml"} <= names


def arch_of_file(path: Path) -> str:
    return "mma" if "_MMA_" in path.name else "seemore"


@pytest.mark.parametrize("path", REPO_CONFIGS, ids=lambda p: p.name)
def test_repo_config(path: Path, tmp_path: Path) -> None:
    config, ignored = load_config(path)
    assert [i.path for i in ignored] == ["model_type"]  # kept so that BasicSR can read the file too
    # The standard data layout is filled in, so nothing but the data itself is missing.
    purpose = "train" if path.name.startswith("train_") else "test"
    if purpose == "train":
        # Warnings only for the warm starts of SeemoRe's x3 and x4 runs, which load non-strictly.
        warm_start = config.path.pretrain_network_g is not None and not config.path.strict_load_g
        assert [w.split(";")[0] for w in validate_for_training(config, require_paths=True)] == (
            ["path.strict_load_g: false"] if warm_start else []
        )
        assert warm_start == (arch_of_file(path) == "seemore" and config.scale > 2)
        assert config.train is not None and config.datasets["train"].gt_size == 64 * config.scale
    else:
        assert validate_for_testing(config, require_paths=True) == []
        assert [d.name for d in config.datasets.values()] == ["Set5", "Set14", "B100", "Urban100", "Manga109"]
    assert unset_paths(config, purpose) == []
    for name, dataset in config.datasets.items():
        assert dataset.dataroot_lq is None or dataset.dataroot_lq.endswith(f"LR_bicubic/X{config.scale}")
        assert dataset.phase == name.split("_")[0]
    assert config.val is not None and config.val.metrics is not None
    assert all(m.crop_border == config.scale and m.test_y_channel for m in config.val.metrics.values())
    # The network is one of the released ones at the file's scale.
    arch, args = network_args(config.network_g)
    assert args[SCALE_ARG[arch]] == config.scale
    preset = "mma" if arch == "mma" else f"seemore-{path.stem.split('_')[2].lower()}"
    assert PRESETS[preset][0] == arch
    assert {k: args[k] for k in PRESETS[preset][1]} == PRESETS[preset][1]
    # dump_config round-trips.
    again, ignored_again = load_config(write(tmp_path, dump_config(config)))
    assert again == config and ignored_again == []


@pytest.mark.parametrize("variant", "TBL")
def test_seemore_warm_starts(variant: str) -> None:
    # Official chain: x3 starts from x2, x4 from x3; non-strict because the upsampler's shape changes.
    for scale in (3, 4):
        config, _ = load_config(CONFIGS / "seemore" / f"train_SeemoRe_{variant}_X{scale}.yml")
        assert config.path.pretrain_network_g == (
            f"experiments/train_SeemoRe_{variant}_X{scale - 1}/models/net_g_latest.pth"
        )
        assert config.path.strict_load_g is False
    config, _ = load_config(CONFIGS / "seemore" / f"train_SeemoRe_{variant}_X2.yml")
    assert config.path.pretrain_network_g is None


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_mma_two_stages(scale: int) -> None:
    pre, _ = load_config(CONFIGS / "mma" / f"train_MMA_x{scale}_pretrain.yml")
    fine, _ = load_config(CONFIGS / "mma" / f"train_MMA_x{scale}_finetune.yml")
    assert pre.datasets["train"].type == "ImageNetPairedDataset" and pre.datasets["train"].dataroot_lq is None
    assert fine.datasets["train"].type == "PairedImageDataset" and fine.datasets["train"].name == "DF2K"
    assert fine.path.pretrain_network_g == f"experiments/{pre.name}/models/net_g_latest.pth"
    assert fine.path.param_key_g == "params_ema"
    assert pre.train is not None and fine.train is not None
    assert (pre.train.optim_g.lr, pre.train.total_iter) == (2e-4, 800000)
    assert (fine.train.optim_g.lr, fine.train.total_iter) == (1e-5, 250000)
    assert pre.train.ema_decay == fine.train.ema_decay == 0.999


@pytest.mark.parametrize(
    ("name", "purpose", "preset", "scale"),
    [
        ("seemore/train_SeemoRe_T_X2.yml", "train", "seemore-t", 2),
        ("seemore/test_SeemoRe_L_X4.yml", "test", "seemore-l", 4),
        ("mma/test_MMA_x2.yml", "test", "mma", 2),
    ],
)
def test_dry_run(name: str, purpose: str, preset: str, scale: int) -> None:
    text = dry_run(CONFIGS / name, purpose=purpose)  # type: ignore[arg-type]
    count = sum(p.numel() for p in create_model(preset, scale).parameters())
    assert f"parameters: {count:,}" not in text and f"{count:,} parameters" in text
    assert "#   model_type: sisr has one model type" in text
    # The whole output is YAML whose data is the resolved config.
    config, _ = load_config(CONFIGS / name)
    assert parse_yaml(text) == parse_yaml(dump_config(config))


def test_mma_full_size_parameter_count() -> None:
    # MMA x2 has 19.8 M parameters (arXiv 2403.08330, abstract).
    text = dry_run(CONFIGS / "mma" / "train_MMA_x2_finetune.yml")
    count = int(re.search(r"# network: MMA, ([\d,]+) parameters", text).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert round(count / 1e6, 1) == 19.8


# ---------------------------------------------------------------------------------------------------------
# The official option files: unmodified copies in tests/fixtures/official (its README names their sources)

OFFICIAL_DIR = Path(__file__).resolve().parent / "fixtures" / "official"
OFFICIAL = sorted(OFFICIAL_DIR.glob("*/*.yml"))


def test_the_official_fixtures_are_there() -> None:
    assert [f"{p.parent.name}/{p.name}" for p in OFFICIAL] == [
        "mma/test_MMA_x3.yml",
        "mma/train_MMA_x3_finetune.yml",
        "mma/train_MMA_x3_pretrain.yml",
        "seemore/test_SeemoRe_T_X4.yml",
        "seemore/train_SeemoRe_T_X4.yml",
    ]
    readme = (OFFICIAL_DIR / "README.md").read_text()
    assert all(f"`{p.parent.name}/{p.name}`" in readme for p in OFFICIAL)


def _fill_paths(raw: dict[str, Any]) -> list[str]:
    """Overrides that fill in the data paths an official file leaves unset (~), as a user would."""
    fills = []
    for key, dataset in raw["datasets"].items():
        for root in ("dataroot_gt", "dataroot_lq"):
            if root in dataset and dataset[root] is None:
                fills.append(f"datasets.{key}.{root}=/data/{key}/{root}")
        if dataset["type"] == "PairedImageDataset" and "dataroot_lq" not in dataset:
            fills.append(f"datasets.{key}.dataroot_lq=/data/{key}/lq")
    if raw["path"].get("pretrain_network_g") is None and "train" not in raw["datasets"]:
        fills.append("path.pretrain_network_g=/weights/net.pth")
    return fills


OFFICIAL_WARNINGS = {"train_SeemoRe_T_X4.yml": ["val.metrics.psnr.crop_border", "path.strict_load_g"]}


@pytest.mark.parametrize("path", OFFICIAL, ids=lambda p: p.name)
def test_official_file(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    config, ignored = load_config(path, _fill_paths(raw))
    if path.name.startswith("train_"):
        warnings = validate_for_training(config, require_paths=True)
        # SeemoRe's x4 file warm-starts from x3 (non-strictly) and crops 3 pixels at scale 4.
        assert [w.split(":")[0] for w in warnings] == OFFICIAL_WARNINGS.get(path.name, [])
        assert config.train is not None
        assert config.train.optim_g.lr == float(raw["train"]["optim_g"]["lr"])
        assert list(config.train.scheduler.milestones) == raw["train"]["scheduler"]["milestones"]  # type: ignore[union-attr]
    else:
        assert validate_for_testing(config, require_paths=True) == []
        assert [d.phase for d in config.datasets.values()] == ["test"] * len(raw["datasets"])
    assert config.scale == raw["scale"]
    # Every key that is not ours is reported, with a reason.
    assert all(item.reason for item in ignored)
    assert {"model_type", "num_gpu"} <= {item.path for item in ignored}
    assert ("network_g.res_scale" in {item.path for item in ignored}) == ("res_scale" in raw["network_g"])
    # The network is the released one.
    arch, args = network_args(config.network_g)
    assert arch == raw["network_g"]["type"].lower()
    expected = {k: v for k, v in raw["network_g"].items() if k not in ("type", "res_scale")}
    assert {k: args[k] for k in expected} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in expected.items()
    }


def _key_paths(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return {prefix}
    out = set()
    for key, value in data.items():
        key = "*" if prefix in ("datasets", "val.metrics") else key  # free names: train, test_1, psnr...
        out |= {f"{prefix}.{key}" if prefix else key} | _key_paths(
            value, f"{prefix}.{key}" if prefix else key
        )
    return out


def test_official_keys_are_covered() -> None:
    # The option files above use every key of the official files.
    official = set().union(*(_key_paths(yaml.safe_load(p.read_text())) for p in OFFICIAL))
    ours = set().union(*(_key_paths(yaml.safe_load(t)) for t in (TRAIN_GT_ONLY, TRAIN_PAIRED, TEST_STYLE)))
    assert official <= ours, sorted(official - ours)


# ---------------------------------------------------------------------------------------------------------
# The BasicSR schema, without the mirrors


def test_gt_only_training_file(tmp_path: Path) -> None:
    config, ignored = load_text(tmp_path, TRAIN_GT_ONLY)
    assert [i.path for i in ignored] == [
        "model_type",
        "num_gpu",
        "datasets.train.prefetch_mode",
        "datasets.train.pin_memory",
        "logger.use_tb_logger",
        "logger.wandb",
        "dist_params",
    ]
    assert config.network_g.args["rgb_mean"] == (0.4488, 0.4371, 0.4040)
    assert config.network_g.args["img_range"] == 1.0
    assert config.val is not None and config.val.val_freq == 5000 and isinstance(config.val.val_freq, int)
    assert config.logger.save_checkpoint_freq == 50000
    assert config.train is not None and config.train.optim_g.lr == 2e-4
    assert config.datasets["train"].phase == "train" and config.datasets["train"].scale == 2
    # The data paths are unset: a real run refuses and names them, a dry run warns.
    with pytest.raises(SisrError, match=r"^datasets\.train\.dataroot_gt: unset .*also unset: datasets\.val"):
        validate_for_training(config)
    warnings = validate_for_training(config, require_paths=False)
    assert [w.split(":")[0] for w in warnings] == [
        "datasets.train.dataroot_gt",
        "datasets.val.dataroot_gt",
        "datasets.val.dataroot_lq",
    ]
    # ... and the dry run builds the network.
    text = dry_run(write(tmp_path, TRAIN_GT_ONLY))
    assert "#   datasets.train.dataroot_gt: unset (~)" in text
    count = sum(p.numel() for p in create_model("mma", 2).parameters())
    assert f"{count:,}" not in text  # this small MMA is not the full one
    assert "# network: MMA, " in text


def test_paired_warm_start_file(tmp_path: Path) -> None:
    config, ignored = load_text(tmp_path, TRAIN_PAIRED)
    assert {i.path for i in ignored} == {
        "model_type",
        "num_gpu",
        "datasets.train.task",
        "datasets.train.prefetch_mode",
        "datasets.train.pin_memory",
        "datasets.val.task",
        "logger.use_tb_logger",
        "logger.wandb",
        "dist_params",
    }
    warnings = validate_for_training(config)
    assert any(w.startswith("path.strict_load_g: false") for w in warnings)
    assert config.train is not None and config.train.fft_opt is not None
    assert (config.train.fft_opt.type, config.train.fft_opt.loss_weight) == ("FFTLoss", 0.1)
    assert config.train.scheduler is not None and config.train.scheduler.gamma == 0.5
    assert config.datasets["train"].filename_tmpl == "{}x3"
    assert network_args(config.network_g) == (
        "seemore",
        {**PRESETS["seemore-t"][1], "scale": 3, "in_chans": 3},
    )


def test_test_file(tmp_path: Path) -> None:
    config, ignored = load_text(tmp_path, TEST_STYLE)
    assert {i.path for i in ignored} == {
        "model_type",
        "num_gpu",
        "datasets.test_1.task",
        "network_g.res_scale",
        "val.use_chop",
    }
    assert "res_scale" not in config.network_g.args
    with pytest.raises(SisrError, match=r"^datasets\.train: missing"):
        validate_for_training(config)
    with pytest.raises(SisrError, match=r"^datasets\.test_1\.dataroot_gt: unset"):
        validate_for_testing(config)
    assert "path.pretrain_network_g" in unset_paths(config, "test")
    filled = load_text(
        tmp_path,
        TEST_STYLE,
        (
            *(f"datasets.test_{i}.dataroot_{k}=/d/{i}/{k}" for i in (1, 2) for k in ("gt", "lq")),
            "path.pretrain_network_g=/w.pth",
        ),
    )[0]
    assert validate_for_testing(filled) == []
    assert filled.datasets["test_2"].phase == "test"
    assert filled.datasets["test_2"].use_hflip is None  # loader defaults are for the train entry only


# ---------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "    betas: [0.9, 0.99]",
            "    betass: [0.9, 0.99]",
            "train.optim_g.betass: unknown key; did you mean 'betas'?",
        ),
        ("\nnetwork_g:", "\nnetwrok_g:", "netwrok_g: unknown key; did you mean 'network_g'?"),
        (
            "    gt_size: 128",
            "    gt_sise: 128",
            "datasets.train.gt_sise: unknown key; did you mean 'gt_size'?",
        ),
        ("  num_feat: 32", "  num_feats: 16", "network_g.num_feats: unknown key; did you mean 'num_feat'?"),
        (
            "      crop_border: 2\n      test_y_channel: true\n    ssim",
            "      crop_boder: 2\n      test_y_channel: true\n    ssim",
            "val.metrics.psnr.crop_boder: unknown key; did you mean 'crop_border'?",
        ),
        ("  print_freq: 100", "  frobnicate: 100", "logger.frobnicate: unknown key; valid keys: print_freq,"),
        ("lr: !!float 2e-4", "lr: abc", "train.optim_g.lr: expected a number, got 'abc'"),
        ("total_iter: 800000", "total_iter: 2.5", "train.total_iter: expected an integer, got 2.5"),
        ("val_freq: !!float 5e3", "val_freq: !!float 5.5e0", "val.val_freq: expected an integer, got 5.5"),
        (
            "    use_rot: true",
            "    use_rot: maybe",
            "datasets.train.use_rot: expected true or false, got 'maybe'",
        ),
        ("betas: [0.9, 0.99]", "betas: [0.9]", "train.optim_g.betas: expected 2 items, got 1"),
        ("betas: [0.9, 0.99]", "betas: [0.9, high]", "train.optim_g.betas[1]: expected a number, got 'high'"),
        (
            "    type: Adam",
            "    type: Adamw",
            "train.optim_g.type: expected one of 'Adam', 'AdamW', got 'Adamw'; did you mean 'AdamW'?",
        ),
        ("  type: MMA", "  type: MAM", "network_g.type: unknown network 'MAM'; did you mean 'MMA'?"),
        ("name: pretrain_like", "name: ~", "name: expected a string, got null (~)"),
        ("num_gpu: 1", "num_gpu: many", "num_gpu: expected an integer or 'auto', got 'many'"),
        ("model_type: SRModel", "model_type: SRGANModel", "model_type: expected 'SRModel', got 'SRGANModel'"),
        (
            "      type: disk\n    gt_size",
            "      type: hdf5\n    gt_size",
            "datasets.train.io_backend.type: expected one of 'disk', 'lmdb', got 'hdf5'",
        ),
        ("  upscale: 2", "  upscale: 4", "network_g.upscale: is 4 but scale is 2; they must agree"),
        (
            "  val:\n",
            "  validation:\n",
            "datasets.validation: a dataset key is train, val, val_<N>, test or test_<N>",
        ),
        (
            "    gamma: 0.5",
            "    gamma: 0.5\n    periods: [10]",
            "train.scheduler.periods: not an option of MultiStepLR",
        ),
        (
            "    milestones: [300000, 500000, 650000, 700000, 750000]",
            "    milestones: [500000, 300000]",
            "train.scheduler.milestones: must be increasing",
        ),
        (
            "    reduction: mean",
            "    reduction: mean\n    eps: !!float 1e-6",
            "train.pixel_opt.eps: only CharbonnierLoss takes eps",
        ),
        ("  ema_decay: 0.999", "  ema_decay: 1.5", "train.ema_decay: must be in [0, 1), got 1.5"),
        (
            "    type: ImageNetPairedDataset\n    dataroot_gt: ~",
            "    type: ImageNetPairedDataset\n    dataroot_gt: ~\n    dataroot_lq: x",
            "datasets.train.dataroot_lq: ImageNetPairedDataset makes the LR image from the GT one",
        ),
        ("  total_iter: 800000", "  total_iter: 800000\n  total_iter: 5", "duplicate key 'total_iter'"),
        ("    lr: !!float 2e-4", "    lr: [", "invalid YAML"),
        ("  optim_g:\n", "  optim_g: 3\n  optim_x:\n", "train.optim_g: expected a mapping, got 3"),
    ],
)
def test_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(SisrError) as err:
        load_text(tmp_path, edited(TRAIN_GT_ONLY, old, new))
    text = str(err.value)
    assert text.startswith(str(tmp_path / "opt.yml")), text
    assert message in text, text
    assert "\n" not in text


def test_missing_key_and_scale_default(tmp_path: Path) -> None:
    with pytest.raises(SisrError, match=r"train\.optim_g\.lr: missing required key"):
        load_text(tmp_path, edited(TRAIN_GT_ONLY, "    lr: !!float 2e-4\n", ""))
    with pytest.raises(
        SisrError, match=r"train\.scheduler\.milestones: missing required key \(for MultiStepLR\)"
    ):
        load_text(
            tmp_path, edited(TRAIN_GT_ONLY, "    milestones: [300000, 500000, 650000, 700000, 750000]\n", "")
        )
    # Without its scale argument, the network takes the top-level scale (not the constructor's default 4).
    config, _ = load_text(tmp_path, edited(TRAIN_GT_ONLY, "  upscale: 2\n", ""))
    assert config.network_g.args["upscale"] == 2


def test_values(tmp_path: Path) -> None:
    config, _ = load_text(
        tmp_path,
        edited(
            edited(TRAIN_GT_ONLY, "lr: !!float 2e-4", "lr: 1e-4"), "total_iter: 800000", "total_iter: 8e5"
        ),
    )
    assert config.train is not None
    assert config.train.optim_g.lr == 1e-4  # YAML 1.1 would read '1e-4' as a string
    assert config.train.total_iter == 800000 and isinstance(config.train.total_iter, int)
    assert config.train.optim_g.weight_decay == 0.0
    adamw, _ = load_text(
        tmp_path, edited(TRAIN_GT_ONLY, "    weight_decay: 0\n", "").replace("type: Adam", "type: AdamW")
    )
    assert adamw.train is not None and adamw.train.optim_g.weight_decay == 0.01  # torch's AdamW default
    lower, _ = load_text(tmp_path, edited(TRAIN_GT_ONLY, "  type: MMA", "  type: mma"))
    assert lower.network_g.arch == "mma"
    cosine = edited(
        TRAIN_GT_ONLY,
        "    type: MultiStepLR\n    milestones: [300000, 500000, 650000, 700000, 750000]\n    gamma: 0.5",
        "    type: CosineAnnealingRestartLR\n    periods: [400000, 400000]\n    restart_weights: [1, 0.5]",
    )
    config, _ = load_text(tmp_path, cosine)
    assert config.train is not None and config.train.scheduler is not None
    assert config.train.scheduler.restart_weights == (1.0, 0.5) and config.train.scheduler.eta_min == 0.0
    with pytest.raises(SisrError, match=r"restart_weights: needs one weight per period \(2\), got 1"):
        load_text(tmp_path, cosine.replace("    restart_weights: [1, 0.5]\n", ""))


# ---------------------------------------------------------------------------------------------------------
# Overrides


def test_overrides(tmp_path: Path) -> None:
    config, _ = load_text(
        tmp_path,
        TRAIN_PAIRED,
        (
            "train.optim_g.lr=1e-4",
            "datasets.train.gt_size=64",
            "train.grad_clip=0.5",
            "train.optim_g.betas=[0.8, 0.9]",
            "path.pretrain_network_g=~",
            "val.metrics.psnr.crop_border = 4",
            "network_g.type=seemore",
        ),
    )
    assert config.train is not None
    assert config.train.optim_g.lr == 1e-4 and config.train.optim_g.betas == (0.8, 0.9)
    assert config.datasets["train"].gt_size == 64
    assert config.train.grad_clip == 0.5
    assert config.path.pretrain_network_g is None
    assert config.val is not None and config.val.metrics is not None
    assert config.val.metrics["psnr"].crop_border == 4
    # 64 is not a multiple of the scale 3: training refuses.
    with pytest.raises(SisrError, match=r"datasets\.train\.gt_size: 64 is not a multiple of scale 3"):
        validate_for_training(config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.optim_g.lrr=1", "train.optim_g.lrr: unknown key; did you mean 'lr'?"),
        ("trian.total_iter=5", "trian: unknown key; did you mean 'train'?"),
        ("datasets.train.gt_size=big", "datasets.train.gt_size: expected an integer, got 'big'"),
        ("train.optim_g.lr", "override 'train.optim_g.lr': expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("train..lr=3", "expected KEY=VALUE"),
        ("scale.x=1", "override 'scale.x=1': scale is 3, not a mapping"),
        ("train.optim_g.betas=[0.9", "invalid YAML"),
    ],
)
def test_override_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(SisrError) as err:
        load_text(tmp_path, TRAIN_PAIRED, (override,))
    assert message in str(err.value), str(err.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SisrError, match="cannot read"):
        load_config(tmp_path / "missing.yml")
    with pytest.raises(SisrError, match="expected a mapping of options at the top, got a list"):
        load_text(tmp_path, "- 1\n- 2\n")
    with pytest.raises(SisrError, match=r"name: missing required key"):
        load_text(tmp_path, "")


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_model_configs(path: Path) -> None:
    config, _ = load_config(path)
    warnings = validate_for_training(config, require_paths=False)
    # The only warning: a first run at x3/x4 warm-started non-strictly from a model of another scale.
    expected = ["path.strict_load_g"] if config.path.strict_load_g is False else []
    assert [w.split(":")[0] for w in warnings] == expected
    assert config.path.strict_load_g or config.path.pretrain_network_g is not None
    assert unset_paths(config, "train") == []
    arch, args = network_args(config.network_g)
    if path.name.startswith("seemore_t_"):
        assert arch == "seemore" and {k: args[k] for k in PRESETS["seemore-t"][1]} == PRESETS["seemore-t"][1]
    else:  # the small MMA of the shipped mma-s models
        assert path.name.startswith("mma_s_")
        assert arch == "mma" and {k: args[k] for k in PRESETS["mma-s"][1]} == PRESETS["mma-s"][1]
    assert config.train is not None and config.train.fft_opt is not None  # the paper's L1 + FFT loss
    # 0.999 as the papers; 0.995 for the short first runs, whose EMA must forget their start sooner
    assert config.train.ema_decay in (0.999, 0.995)
    # Runs that go on from a shipped model start from its file, which must be the one of the same name
    # (a real-world model's run starts from the clean model it is named after).
    start = config.path.pretrain_network_g
    if start is not None and start.startswith("src/sisr/weights/"):
        family = path.stem.rsplit("_stage", 1)[0].removesuffix("_real").replace("_", "-")
        assert start == f"src/sisr/weights/{family}.safetensors"
        assert (CONFIGS.parent / start).is_file()


@pytest.mark.parametrize("path", TRIAL_CONFIGS, ids=lambda p: p.name)
def test_trial_configs(path: Path) -> None:
    # Complete training recipes, warm-started from a shipped file that exists.
    assert {p.parent.name for p in CONFIGS.glob("*/*.yml")} == {"mma", "seemore", "shipped", "trials"}
    config, _ = load_config(path)
    assert validate_for_training(config, require_paths=False) == []
    assert unset_paths(config, "train") == []
    start = config.path.pretrain_network_g
    assert start is not None and (CONFIGS.parent / start).is_file()


# ---------------------------------------------------------------------------------------------------------
# Non-finite and out-of-range numbers


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.optim_g.lr=.nan", "train.optim_g.lr: expected a finite number, got nan"),
        ("train.optim_g.lr=.inf", "train.optim_g.lr: expected a finite number, got inf"),
        ("train.optim_g.lr=-.Inf", "train.optim_g.lr: expected a finite number, got -inf"),
        ("train.optim_g.lr=1e400", "train.optim_g.lr: expected a finite number, got inf"),
        ("train.optim_g.betas=[0.9, .nan]", "train.optim_g.betas[1]: expected a finite number, got nan"),
        ("network_g.img_range=.nan", "network_g.img_range: expected a finite number, got nan"),
        ("network_g.rgb_mean=[0.4, .inf, 0.4]", "network_g.rgb_mean[1]: expected a finite number"),
        ("dist_params.port=.nan", "dist_params.port: expected a finite number, got nan"),  # an ignored key
        ("logger.wandb={project: .inf}", "logger.wandb.project: expected a finite number, got inf"),
        ("train.ema_decay=.nan", "train.ema_decay: expected a finite number, got nan"),
        (
            "train.optim_g.lr=" + "9" * 400,
            "train.optim_g.lr: expected a number, got an integer of 400 digits",
        ),
        ("train.total_iter=.inf", "train.total_iter: expected a finite number, got inf"),
        (
            "train.total_iter=1e300",
            "train.total_iter: expected an integer below 2**63, got an integer of 301 digits",
        ),
        ("datasets.train.gt_size=" + "9" * 30, "datasets.train.gt_size: expected an integer below 2**63"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(SisrError) as err:
        load_text(tmp_path, TRAIN_GT_ONLY, (override,))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    # In the file itself as well.
    key, value = override.split("=", 1)
    if key == "train.optim_g.lr":
        with pytest.raises(SisrError, match=re.escape(message)):
            load_text(tmp_path, edited(TRAIN_GT_ONLY, "lr: !!float 2e-4", f"lr: {value}"))


def test_metric_kind_is_the_configs() -> None:
    config, _ = load_config(CONFIGS / "mma" / "test_MMA_x2.yml")
    assert config.val is not None and config.val.metrics is not None
    assert {name: m.kind for name, m in config.val.metrics.items()} == {"psnr": "psnr", "ssim": "ssim"}


# ---------------------------------------------------------------------------------------------------------
# Fuzzing the loader: every failure is a one-line SisrError

_ODD_VALUES: list[Any] = [
    None,
    "abc",
    "",
    0,
    -1,
    1,
    7,
    2.5,
    -1e-9,
    True,
    [],
    {},
    [1, 2, 3],
    {"type": "x"},
    float("nan"),
    float("inf"),
    -float("inf"),
    10**400,
    -(10**30),
    1e308,
    "~",
    "{}x3",
    "/nonexistent",
]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


def _mutate(data: Any, rng: Any) -> None:
    paths = _paths(data)
    if not paths:
        return
    path = paths[rng.integers(len(paths))]
    parent, key = _parent(data, path), path[-1]
    kind = rng.integers(5)
    if kind == 0 and isinstance(parent, dict):  # drop the key
        del parent[key]
    elif kind == 1 and isinstance(parent, dict):  # rename it: a typo, a case slip, a number
        names: list[Any] = [f"{key}s", str(key).upper(), str(key)[:-1], 3, f"{key}.x"]
        parent[names[rng.integers(len(names))]] = parent.pop(key)
    elif kind == 4:  # deep nesting
        value: Any = 1
        for _ in range(int(rng.integers(10, 200))):
            value = [value] if rng.random() < 0.5 else {"a": value}
        parent[key] = value
    else:  # another type, or an odd number
        parent[key] = _ODD_VALUES[rng.integers(len(_ODD_VALUES))]


def _fuzz_sources() -> list[tuple[str, Any]]:
    texts = [p.read_text() for p in [*sorted(CONFIGS.glob("*/*.yml")), *OFFICIAL]]
    return [(text, yaml.safe_load(text)) for text in texts]


def _fuzz_case(sources: list[tuple[str, Any]], rng: Any) -> tuple[str, list[str]]:
    import copy

    text, parsed = sources[rng.integers(len(sources))]
    choice = rng.random()
    if choice < 0.15:  # garbage bytes spliced in, or the file cut short
        raw = bytearray(text.encode())
        at = int(rng.integers(len(raw)))
        if rng.random() < 0.5:
            raw[at:at] = rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
        else:
            del raw[at:]
        return raw.decode("utf-8", errors="surrogateescape"), []
    if choice < 0.25:  # deep nesting written as YAML text
        depth = int(rng.integers(50, 5000))
        return text + f"\nextra: {'[' * depth}{']' * depth}\n", []
    data = copy.deepcopy(parsed)
    if choice < 0.4:  # an override instead of an edit
        paths = [p for p in _paths(data) if all(isinstance(k, str) for k in p)]
        path = paths[rng.integers(len(paths))]
        values = [".nan", ".inf", "-1", "0", "abc", "[1, 2", "{a: 1}", "~", "1e999", "9" * 400]
        return text, [f"{'.'.join(path)}={values[rng.integers(len(values))]}"]
    for _ in range(int(rng.integers(1, 4))):
        _mutate(data, rng)
    return yaml.safe_dump(data, sort_keys=False), []


def test_fuzzed_configs_fail_only_with_one_line_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    sources = _fuzz_sources()
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(300):  # about 10 s: PyYAML's pure-Python parser takes most of it
        text, overrides = _fuzz_case(sources, rng)
        path = tmp_path / f"case{i}.yml"
        path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        try:
            config, _ = load_config(path, overrides)
            check = validate_for_training if "train" in config.datasets else validate_for_testing
            check(config, require_paths=False)
            load_config(write(tmp_path, dump_config(config), "again.yml"))
            outcomes["loaded"] += 1
        except SisrError as err:
            assert "\n" not in str(err) and str(err), (i, str(err))
            outcomes["refused"] += 1
        except Exception as err:  # pragma: no cover - the failure this test exists to find
            pytest.fail(f"case {i} ({overrides}): {type(err).__name__}: {err}\n{text[:2000]}")
    # Both outcomes occur often enough for the test to mean something.
    assert outcomes["loaded"] >= 15 and outcomes["refused"] >= 200, outcomes
