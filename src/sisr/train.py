"""Training: one function, :func:`train`, that reads top to bottom, and the few helpers it calls.

The recipe is BasicSR's ``SRModel`` as the MMA and SeemoRe option files use it: random LR/HR crops, a
pixel loss (L1, MSE or Charbonnier) plus SeemoRe's optional FFT loss, Adam(W), a learning rate stepped
once per iteration, an exponential moving average (EMA) of the weights, validation every ``val_freq``
iterations (on the EMA weights when there are some) and a checkpoint every ``save_checkpoint_freq``.

Outputs go to ``experiments/<name>/`` (or ``path.experiments_root``):

- ``models/net_g_<iter>.pth`` and ``models/net_g_latest.pth``: self-describing checkpoints (architecture,
  constructor arguments, ``params``, ``params_ema``, optimizer, scheduler, iteration, RNG states, the
  config, and ``hardware``: what the run computed on, one entry per start or resume with the iteration it
  started from, :func:`sisr.runtime.hardware`'s device, name, CPU and torch version and the process
  count) written atomically, so a kill at any moment leaves the previous checkpoint intact. They load
  with ``torch.load(weights_only=True)`` and with :func:`sisr.load_model` (which prefers ``params_ema``);
- ``log.jsonl``: one JSON object per progress line and per validation;
- ``config.yml``: the resolved config of the run;
- ``tb/``: TensorBoard events, only when ``torch.utils.tensorboard`` can be imported.

Nothing is written until the run can start (config, device, weights to start from or resume, data all
checked), so a failed start leaves no experiment folder. A loss that turns NaN or infinite stops the run
with a one-line error naming the first such iteration, and weights are checked before every checkpoint:
no checkpoint of non-finite weights is ever written.

Resuming (``--resume``, ``path.resume_state``) restores everything in the checkpoint and restarts the
data stream at the checkpoint's iteration (:class:`sisr.data.loaders.InfiniteLoader`), so a run stopped at
iteration k and resumed reaches, on the same machine and device, the same weights as a run that never
stopped.

Distributed training: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process joins a
process group (NCCL on CUDA, Gloo on CPU), reads its own shard of every epoch, and the network is wrapped
in ``DistributedDataParallel``; ``batch_size_per_gpu`` is per process. Only rank 0 prints, logs and
writes checkpoints. Validation is sharded over the ranks.

Differences from BasicSR, on purpose: with ``warmup_iter`` > 0 the configured schedule starts after the
linear warm-up (``SequentialLR``) rather than running underneath it; checkpoints hold the training state
together with the weights; a non-strict ``pretrain_network_g`` load reports every tensor it skips; an
absent ``param_key_g`` is an error, not a silent fallback to ``params``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
)

from sisr.checkpoint import atomic_write, read_checkpoint, read_weights, save_checkpoint
from sisr.config import (
    Config,
    LossConfig,
    OptimConfig,
    SchedulerConfig,
    build_network,
    dump_config,
    network_args,
    validate_for_training,
)
from sisr.data.build import datasets_from_config
from sisr.data.datasets import GTOnlyDataset, PairedImageDataset
from sisr.data.loaders import InfiniteLoader, make_loader
from sisr.errors import SisrError
from sisr.runtime import World, hardware, init_distributed, resolve_device

__all__ = [
    "EMA",
    "TrainResult",
    "experiment_dir",
    "load_pretrained",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "train",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------------------
# Losses


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x  # "none"


def make_loss(cfg: LossConfig) -> LossFn:
    """A loss ``(output, target) -> loss_weight * reduce(elementwise distance)``.

    ``L1Loss``: ``|o - t|``; ``MSELoss``: ``(o - t)^2``; ``CharbonnierLoss``: ``sqrt((o - t)^2 + eps)``
    (BasicSR's: eps is not squared); ``FFTLoss`` (SeemoRe's): ``|F(o) - F(t)|`` over the real and
    imaginary parts of ``torch.fft.rfft2`` of both images, i.e. an L1 loss over a (B, C, H, W//2+1, 2)
    tensor, so ``mean`` divides by twice the number of complex coefficients.
    """
    weight, reduction = cfg.loss_weight, cfg.reduction

    if cfg.type == "L1Loss":
        return lambda out, target: weight * _reduce((out - target).abs(), reduction)
    if cfg.type == "MSELoss":
        return lambda out, target: weight * _reduce((out - target).square(), reduction)
    if cfg.type == "CharbonnierLoss":
        eps = cfg.eps  # set by the config (default 1e-12, BasicSR's)
        assert eps is not None, "a LossConfig from sisr.config.from_dict or load_config"
        return lambda out, target: weight * _reduce(((out - target).square() + eps).sqrt(), reduction)
    if cfg.type == "FFTLoss":

        def fft_loss(out: Tensor, target: Tensor) -> Tensor:
            out_f, target_f = torch.fft.rfft2(out), torch.fft.rfft2(target)  # (B, C, H, W // 2 + 1) complex
            diff = torch.view_as_real(out_f) - torch.view_as_real(target_f)  # (..., 2): real, imaginary
            return weight * _reduce(diff.abs(), reduction)

        return fft_loss
    raise SisrError(f"unknown loss type {cfg.type!r}")


# ---------------------------------------------------------------------------------------------------------
# Optimizer, learning-rate schedule, EMA


def make_optimizer(params: Sequence[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters."""
    cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[cfg.type]
    # The config fills in weight_decay (torch's defaults: Adam 0, AdamW 0.01).
    assert cfg.weight_decay is not None, "an OptimConfig from sisr.config.from_dict or load_config"
    return cls(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad
    )


def _multistep_restart_factor(cfg: SchedulerConfig) -> Callable[[int], float]:
    # BasicSR's MultiStepRestartLR as a factor of the base rate: at a restart the rate jumps to
    # weight * base, then each later milestone (counted with multiplicity) multiplies it by gamma.
    assert cfg.restarts is not None and cfg.restart_weights is not None and cfg.gamma is not None
    restarts, weights, gamma = list(cfg.restarts), list(cfg.restart_weights), cfg.gamma
    milestones = list(cfg.milestones or ())

    def factor(it: int) -> float:
        last = max((i for i, r in enumerate(restarts) if r <= it), default=None, key=lambda i: restarts[i])
        start, weight = (0, 1.0) if last is None else (restarts[last], weights[last])
        return weight * gamma ** sum(1 for m in milestones if start < m <= it)

    return factor


def _cosine_restart_factor(cfg: SchedulerConfig, base_lr: float) -> Callable[[int], float]:
    # BasicSR's CosineAnnealingRestartLR: cycle i lasts periods[i] iterations and anneals from
    # restart_weights[i] * base to eta_min. After the last cycle the rate stays at its end value.
    assert cfg.periods is not None and cfg.restart_weights is not None and cfg.eta_min is not None
    periods, weights = list(cfg.periods), list(cfg.restart_weights)
    ends = np.cumsum(periods).tolist()
    eta = cfg.eta_min / base_lr

    def factor(it: int) -> float:
        idx = next((i for i, end in enumerate(ends) if it <= end), len(ends) - 1)
        start = 0 if idx == 0 else ends[idx - 1]
        t = min(it - start, periods[idx])
        return eta + weights[idx] * 0.5 * (1.0 - eta) * (1.0 + math.cos(math.pi * t / periods[idx]))

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig | None, *, warmup_iter: int
) -> LRScheduler:
    """The per-iteration learning-rate schedule, from stock ``torch.optim.lr_scheduler`` parts.

    ``MultiStepLR`` is torch's (BasicSR's restarts, when given, through ``LambdaLR``);
    ``CosineAnnealingLR`` is torch's; ``CosineAnnealingRestartLR`` is a ``LambdaLR`` with BasicSR's
    formula. None keeps the rate constant. With ``warmup_iter`` > 0 a ``LinearLR`` ramp from
    ``lr / warmup_iter`` to ``lr`` comes first and the schedule follows it (``SequentialLR``).
    ``cfg`` comes resolved from the config reader, which fills in the defaults (gamma 0.1, ...).
    """
    base_lr = optimizer.param_groups[0]["lr"]
    main: LRScheduler
    if cfg is None:
        main = LambdaLR(optimizer, lambda it: 1.0)
    elif cfg.type in ("MultiStepLR", "MultiStepRestartLR"):
        if tuple(cfg.restarts or ()) == (0,) and tuple(cfg.restart_weights or ()) == (1.0,):
            assert cfg.gamma is not None
            main = MultiStepLR(optimizer, milestones=list(cfg.milestones or ()), gamma=cfg.gamma)
        else:
            main = LambdaLR(optimizer, _multistep_restart_factor(cfg))
    elif cfg.type == "CosineAnnealingLR":
        assert cfg.T_max is not None
        assert cfg.eta_min is not None
        main = CosineAnnealingLR(optimizer, T_max=cfg.T_max, eta_min=cfg.eta_min)
    elif cfg.type == "CosineAnnealingRestartLR":
        main = LambdaLR(optimizer, _cosine_restart_factor(cfg, base_lr))
    else:
        raise SisrError(f"unknown scheduler type {cfg.type!r}")
    if warmup_iter <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_iter, end_factor=1.0, total_iters=warmup_iter)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_iter])


class EMA:
    """An exponential moving average of a network's parameters: ``ema = decay * ema + (1 - decay) * p``.

    ``module`` is a frozen copy of the network holding the averages; buffers are copied, not averaged.
    With ``warmup``, update ``t`` (from 0) uses ``min(decay, (1 + t) / (10 + t))`` instead, as timm's
    model EMA does: a short run, or one that starts layers afresh (a warm start at another scale), then
    does not ship an average still made largely of the initial weights (at decay 0.999 without warm-up,
    600 updates leave 55% of them in).
    """

    def __init__(self, model: nn.Module, *, decay: float, warmup: bool = False) -> None:
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, t: int) -> float:
        """The decay of update ``t`` (0-based)."""
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, t: int) -> None:
        """Moves the averages towards ``model``'s current parameters; ``t`` counts earlier updates."""
        decay = self.decay_at(t)
        for avg, p in zip(self.module.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)
        for avg, b in zip(self.module.buffers(), model.buffers(), strict=True):
            avg.copy_(b)


# ---------------------------------------------------------------------------------------------------------
# Weights in: pre-trained networks and resumed runs


def _available_keys(path: str) -> list[str]:
    found = []
    for key in ("params", "params_ema"):
        try:
            read_weights(path, param_key=key)
            found.append(key)
        except SisrError:
            pass
    return found


def load_pretrained(model: nn.Module, path: str, *, param_key: str | None, strict: bool) -> list[str]:
    """Loads ``path.pretrain_network_g`` into ``model``.

    Args:
        model: The freshly built network.
        path: The checkpoint file.
        param_key: Its entry to read (``params``, ``params_ema``), or None for the file's default.
        strict: Every tensor must match by name and shape. Otherwise tensors whose name and shape both
            match are loaded, and the others are skipped (as when warm-starting a x3 model from x2).

    Returns:
        One line per skipped tensor (``name: reason``); empty when everything was loaded.

    Raises:
        SisrError: The file cannot be read, lacks ``param_key`` (naming the keys it has), or (strict) does
            not fit the network.
    """
    try:
        weights = read_weights(path, param_key=param_key)
    except SisrError as err:
        available = _available_keys(path) if param_key is not None else []
        if param_key is not None and param_key not in available and available:
            raise SisrError(
                f"path.pretrain_network_g: {path} has no {param_key!r} weights (it has: "
                f"{', '.join(available)}); set path.param_key_g"
            ) from None
        raise SisrError(f"path.pretrain_network_g: {err}") from None
    theirs = weights.state_dict
    own = model.state_dict()
    skipped = [f"{k}: not in the file" for k in own if k not in theirs]
    skipped += [f"{k}: not in the network" for k in theirs if k not in own]
    skipped += [
        f"{k}: shape {tuple(theirs[k].shape)} in the file, {tuple(own[k].shape)} in the network"
        for k in own
        if k in theirs and theirs[k].shape != own[k].shape
    ]
    if strict and skipped:
        raise SisrError(
            f"path.pretrain_network_g: {path} does not fit the network ({len(skipped)} tensors differ, "
            f"e.g. {skipped[0]}); set path.strict_load_g: false to load only the matching ones"
        )
    fitting = {k: v for k, v in theirs.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict({**own, **fitting}, strict=True)
    return skipped


def experiment_dir(config: Config) -> Path:
    """``path.experiments_root``, or ``experiments/<name>``."""
    return Path(config.path.experiments_root or Path("experiments") / config.name)


def _resume_path(resume: str | os.PathLike[str] | bool | None, config: Config) -> Path | None:
    # resume=True (``--resume`` without a path) means this experiment's latest checkpoint.
    if resume is None or resume is False:
        resume = config.path.resume_state
    if resume is None:
        return None
    path = experiment_dir(config) / "models" / "net_g_latest.pth" if resume is True else Path(resume)
    if not path.is_file():
        raise SisrError(f"{path}: no checkpoint to resume from")
    return path


def _load_state(path: Path, config: Config) -> dict[str, Any]:
    # read_checkpoint refuses garbage, truncated files, pickles that carry code and newer formats.
    state = read_checkpoint(path)
    missing = [
        k
        for k in ("arch", "args", "params", "optimizer", "scheduler", "step", "seed", "rng")
        if k not in state
    ]
    if missing:
        raise SisrError(f"{path}: not a sisr training checkpoint (no {', '.join(missing)}); cannot resume")
    for key in ("step", "seed"):
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            raise SisrError(
                f"{path}: its {key!r} entry is {state[key]!r}, not an iteration count; cannot resume"
            )
    arch, args = network_args(config.network_g)
    if state["arch"] != arch or _plain(state["args"]) != _plain(args):
        raise SisrError(
            f"{path}: the checkpoint's network ({state['arch']} {state['args']}) is not the config's "
            f"({arch} {args})"
        )
    return dict(state)


def _plain(obj: Any) -> Any:
    # YAML-shaped data (tuples as lists), for comparing and for storing the config in checkpoints.
    return yaml.safe_load(yaml.safe_dump(json.loads(json.dumps(obj))))


# ---------------------------------------------------------------------------------------------------------
# Random-number generator states, stored as tensors and plain lists so that weights_only loading works.


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# Data


def _validate(
    model: nn.Module,
    datasets: Mapping[str, PairedImageDataset | GTOnlyDataset],
    config: Config,
    *,
    step: int,
    root: Path,
    distributed: bool,
) -> dict[str, dict[str, float]]:
    """``{dataset name: {metric name: mean value}}`` of ``model`` on the val datasets."""
    from sisr.evaluate import MetricSpec, evaluate_dataset

    assert config.val is not None
    specs = {
        name: MetricSpec(kind=m.kind, crop_border=m.crop_border, y_channel=m.test_y_channel)
        for name, m in (config.val.metrics or {}).items()
    }
    was_training = model.training
    model.eval()
    results = {}
    for name, dataset in datasets.items():
        report = evaluate_dataset(
            model,
            dataset,
            scale=config.scale,
            metrics=specs,
            self_ensemble=config.val.self_ensemble,
            save_dir=root / "visualization" / name if config.val.save_img else None,
            save_suffix=config.val.suffix or str(step),
            distributed=distributed,
            name=name,
        )
        results[name] = {k: float(v) for k, v in report["metrics"].items()}
    model.train(was_training)
    return results


# ---------------------------------------------------------------------------------------------------------
# Processes, logging


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


class _Log:
    """Rank 0's output: lines on stdout, records in ``log.jsonl``, scalars to TensorBoard if installed."""

    def __init__(self, root: Path, *, enabled: bool) -> None:
        self.enabled = enabled
        self.root = root
        self.path = root / "log.jsonl"
        self.tb: Any = None
        self.tb_tried = False  # the writer is made with the first record: nothing is written before

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def record(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"iter": step, "time": round(time.time(), 3), **values}) + "\n")
        if not self.tb_tried:
            self.tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

                self.tb = SummaryWriter(str(self.root / "tb"))
            except ImportError:
                pass
        if self.tb is not None:
            for key, value in _flatten(values).items():
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
    return out


def _all_finite(module: nn.Module) -> bool:
    tensors = [t for t in module.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _check_bf16(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SisrError("train.bf16: this GPU does not support bfloat16; set train.bf16: false")


# ---------------------------------------------------------------------------------------------------------
# The training loop


@dataclass
class TrainResult:
    """What :func:`train` leaves behind: the trained network, its EMA (if any) and where files went."""

    model: nn.Module
    ema: nn.Module | None
    step: int
    experiment_dir: Path


def train(
    config: Config,
    *,
    resume: str | os.PathLike[str] | bool | None = None,
    device: str | None = None,
    deterministic: bool = False,
    time_limit: float | None = None,
) -> TrainResult:
    """Trains the network of ``config`` until ``train.total_iter``, or until `time_limit` runs out.

    Args:
        config: A loaded config (:func:`sisr.config.load_config`).
        resume: A checkpoint to continue, True for this experiment's latest one, or None to use
            ``path.resume_state`` (usually unset: a fresh run).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (:func:`sisr.runtime.resolve_device`);
            None picks the process's GPU if there is one.
        deterministic: Also call ``torch.use_deterministic_algorithms(True)`` (slower on GPUs).
        time_limit: Seconds of training loop (setup excluded) after which the run stops at the end of
            the current iteration, with a checkpoint there that ``resume`` continues bit for bit; under
            ``torchrun`` it is checked at the progress lines (every ``logger.print_freq`` iterations)
            and rank 0's clock decides for every rank. None: no limit.

    Returns:
        The trained network (unwrapped), its EMA copy and the iteration reached.

    Raises:
        SisrError: On a config that cannot train, a device this machine lacks, unreadable data or
            checkpoints, or a loss or weights that turn non-finite (naming the iteration).
    """
    if time_limit is not None and not 0 < time_limit < math.inf:
        raise SisrError(f"the time limit must be a positive number of seconds, got {time_limit}")
    world = init_distributed()
    try:
        return _train(
            config, world, resume=resume, device=device, deterministic=deterministic, time_limit=time_limit
        )
    finally:
        if world.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config: Config,
    world: World,
    *,
    resume: str | os.PathLike[str] | bool | None,
    device: str | None,
    deterministic: bool,
    time_limit: float | None,
) -> TrainResult:
    # --- Setup: check the config, decide where things go, seed. -------------------------------------
    # Nothing is written until everything a run needs has been checked and loaded (the network, the
    # weights to start from, the data), so that a failed start leaves no empty experiment behind.
    warnings = validate_for_training(config)
    assert config.train is not None
    opt = config.train
    root = experiment_dir(config)
    models_dir = root / "models"
    resume_path = _resume_path(resume, config)
    if resume_path is None and (models_dir / "net_g_latest.pth").exists():
        raise SisrError(
            f"{root}: holds checkpoints of an earlier run; continue it with --resume, or move it away "
            "(or change name / path.experiments_root) to start afresh"
        )
    dev = resolve_device(device, local_rank=world.local_rank)
    if opt.bf16:
        _check_bf16(dev)
    state = None if resume_path is None else _load_state(resume_path, config)
    log = _Log(root, enabled=world.main)
    for warning in warnings:
        log.line(f"warning: {warning}")
    if deterministic:
        torch.use_deterministic_algorithms(True)
    seed = config.manual_seed
    if seed is None:  # a random seed, the same on all ranks, logged so that the run can be repeated
        box = [random.SystemRandom().randrange(2**31)]
        if world.enabled:
            dist.broadcast_object_list(box, src=0)
        seed = int(box[0])
        log.line(f"manual_seed: unset; using {seed}")
    _seed_everything(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)

    # --- The network, its EMA, the optimizer and the schedule. ---------------------------------------
    arch, args = network_args(config.network_g)
    model = build_network(config).to(dev)
    if config.path.pretrain_network_g is not None and resume_path is None:
        skipped = load_pretrained(
            model,
            config.path.pretrain_network_g,
            param_key=config.path.param_key_g,
            strict=config.path.strict_load_g,
        )
        log.line(f"loaded {config.path.pretrain_network_g} ({config.path.param_key_g or 'default'})")
        for item in skipped:
            log.line(f"  skipped {item}")
    ema = EMA(model, decay=opt.ema_decay, warmup=opt.ema_warmup) if opt.ema_decay > 0 else None
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], opt.optim_g)
    scheduler = make_scheduler(optimizer, opt.scheduler, warmup_iter=opt.warmup_iter)
    losses = {"l_pix": opt.pixel_opt, "l_fft": opt.fft_opt}
    for key, cfg in (("pixel_opt", opt.pixel_opt), ("fft_opt", opt.fft_opt)):
        if cfg is not None and cfg.reduction == "none":
            raise SisrError(f"train.{key}.reduction: 'none' gives no single number to minimise; use mean")
    loss_fns = {name: make_loss(cfg) for name, cfg in losses.items() if cfg is not None}

    step = 0
    if state is not None:
        assert resume_path is not None
        if ema is not None and state.get("params_ema") is None:
            raise SisrError(f"{resume_path}: has no params_ema, but train.ema_decay is set")
        restores: dict[str, Callable[[Any], Any]] = {
            "params": model.load_state_dict,
            **({"params_ema": ema.module.load_state_dict} if ema is not None else {}),
            "optimizer": optimizer.load_state_dict,
            "scheduler": scheduler.load_state_dict,
            "rng": _set_rng_state,
        }
        for key, restore in restores.items():
            try:
                restore(state[key])
            except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
                raise SisrError(
                    f"{resume_path}: its {key!r} entry is damaged or does not fit this run"
                ) from None
        step = state["step"]
        seed = state["seed"]  # the data stream continues with the seed it started with
        if state.get("world_size", 1) != world.world_size:  # batches are counted per process
            log.line(
                f"warning: the checkpoint was written by {state.get('world_size', 1)} processes, this run "
                f"has {world.world_size}: the data order will differ from an uninterrupted run"
            )
        log.line(f"resumed from {resume_path} at iteration {step}")
    # What each stretch of the run computed on, from the iteration it started at (a resumed run may have
    # moved between machines): checkpoints and the shipped files made from them say so.
    ran_on = [] if state is None else list(state.get("hardware", []))
    ran_on.append({"from_iteration": step, "processes": world.world_size, **hardware(dev)})

    net: nn.Module = model
    if world.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    # --- Data: an endless stream of batches, positioned at the iteration we start from. ---------------
    train_cfg = config.datasets["train"]
    assert train_cfg.batch_size_per_gpu is not None
    loader = make_loader(
        datasets_from_config(config, phases=("train",))["train"],
        batch_size=train_cfg.batch_size_per_gpu,
        shuffle=bool(train_cfg.use_shuffle),
        num_workers=train_cfg.num_worker_per_gpu or 0,
        seed=seed,
        distributed=world.enabled,
        drop_last=True,
        pin_memory=dev.type == "cuda",
    )
    batches = InfiniteLoader(loader, start_iteration=step)
    val_sets = {}
    if config.val is not None and config.val.val_freq is not None:
        val_sets = {d.name: d for d in datasets_from_config(config, phases=("val",)).values()}

    if world.main:  # the run can start: now its folder is made
        models_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(root / "config.yml", lambda tmp: Path(tmp).write_text(dump_config(config)))
    log.line(
        f"training {arch} ({sum(p.numel() for p in model.parameters()):,} parameters) on {dev} "
        f"x{world.world_size}, {batches.batches_per_epoch} batches of {train_cfg.batch_size_per_gpu} per "
        f"epoch, iterations {step} -> {opt.total_iter}, seed {seed}"
    )

    # The first iteration whose loss was not finite (-1: none yet) and its loss terms, kept on the device
    # and read at progress lines, validations and saves only, so that a GPU is not synchronised per step.
    first_bad = torch.full((), -1, dtype=torch.long, device=dev)
    bad_terms = torch.zeros(len(loss_fns), device=dev)

    def check_finite() -> None:
        bad = first_bad.clone()
        if world.enabled:  # every rank stops at the same point, whichever rank met the value first
            bad = torch.where(bad < 0, opt.total_iter + 1, bad)
            dist.all_reduce(bad, op=dist.ReduceOp.MIN)
            bad = torch.where(bad > opt.total_iter, -1, bad)
        if int(bad) >= 0:
            values = ", ".join(f"{n} {v:.4g}" for n, v in zip(loss_fns, bad_terms.tolist(), strict=True))
            raise SisrError(
                f"iteration {int(bad)}: the loss is not finite ({values}); the run is stopped and nothing "
                "of it after the last checkpoint is saved (try a lower train.optim_g.lr or train.grad_clip)"
            )

    def save(step: int) -> None:
        check_finite()
        for what, module in (("params", model), ("params_ema", None if ema is None else ema.module)):
            if module is not None and not _all_finite(module):
                raise SisrError(
                    f"iteration {step}: the weights ({what}) hold non-finite values; the run is stopped "
                    "and their checkpoint is not written (try a lower train.optim_g.lr or train.grad_clip)"
                )
        if not world.main:
            return
        path = models_dir / f"net_g_{step}.pth"
        save_checkpoint(
            path,
            arch=arch,
            args=args,
            params=model.state_dict(),
            params_ema=None if ema is None else ema.module.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            step=step,
            seed=seed,
            rng=_rng_state(),
            world_size=world.world_size,
            hardware=ran_on,
            config=_plain(yaml.safe_load(dump_config(config))),
        )
        atomic_write(models_dir / "net_g_latest.pth", lambda tmp: shutil.copyfile(path, tmp))

    def out_of_time() -> bool:
        assert time_limit is not None
        over = time.perf_counter() - loop_start >= time_limit
        if world.enabled:  # rank 0's clock decides, so that every rank stops after the same iteration
            flag = torch.tensor(float(over), device=dev)
            dist.broadcast(flag, src=0)
            over = bool(flag)
        return over

    # --- The loop. ----------------------------------------------------------------------------------
    loop_start = time.perf_counter()
    net.train()
    window: dict[str, Tensor] = {}  # sums over the iterations since the last progress line
    window_start, window_steps = time.perf_counter(), 0
    while step < opt.total_iter:
        batch = next(batches)
        lq = batch["lq"].to(dev, non_blocking=True)
        gt = batch["gt"].to(dev, non_blocking=True)

        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opt.bf16):
            out = net(lq)
        out = out.float()  # losses (and the FFT) in float32
        terms = {name: fn(out, gt) for name, fn in loss_fns.items()}
        loss = sum(terms.values())
        assert isinstance(loss, Tensor)
        stacked = torch.stack([t.detach() for t in terms.values()])
        newly = (first_bad < 0) & ~torch.isfinite(stacked).all()
        first_bad = torch.where(newly, step + 1, first_bad)
        bad_terms = torch.where(newly, stacked, bad_terms)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if opt.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        try:
            optimizer.step()
        except RuntimeError as err:  # Adam's step, lr / (1 - beta1^t), beyond float32's range
            if "overflow" not in str(err):
                raise
            raise SisrError(
                f"iteration {step + 1}: the optimizer's step overflows float32; train.optim_g.lr "
                f"{opt.optim_g.lr:g} is far too large"
            ) from None
        scheduler.step()
        if ema is not None:
            ema.update(model, step)  # update `step` of this run: a resumed run goes on with the schedule
        step += 1

        # Kept as tensors until the progress line, so that a GPU is not synchronised every iteration.
        for name, value in {**terms, **({"grad_norm": grad_norm} if grad_norm is not None else {})}.items():
            window[name] = window[name] + value.detach() if name in window else value.detach()
        window_steps += 1

        if step % config.logger.print_freq == 0 or step == opt.total_iter:
            check_finite()
            elapsed = time.perf_counter() - window_start
            speed = window_steps / max(elapsed, 1e-9)
            means = {k: float(v) / window_steps for k, v in window.items()}
            lr = optimizer.param_groups[0]["lr"]
            eta = _format_duration((opt.total_iter - step) / max(speed, 1e-9))
            terms_text = " ".join(f"{k} {v:.4e}" for k, v in means.items())
            log.line(
                f"[iter {step:>{len(str(opt.total_iter))}}/{opt.total_iter}] {speed:.2f} it/s eta {eta} "
                f"| {terms_text} | lr {lr:.3e}"
            )
            log.record(step, lr=lr, it_per_s=speed, epoch=batches.epoch, **means)
            window, window_start, window_steps = {}, time.perf_counter(), 0

        if val_sets and config.val is not None and config.val.val_freq is not None:
            if step % config.val.val_freq == 0 or step == opt.total_iter:
                check_finite()
                scores = _validate(
                    ema.module if ema else model,
                    val_sets,
                    config,
                    step=step,
                    root=root,
                    distributed=world.enabled,
                )
                for set_name, values in scores.items():
                    log.line(f"  val {set_name}: " + " ".join(f"{k} {v:.4f}" for k, v in values.items()))
                log.record(step, val=scores)

        saved = step % config.logger.save_checkpoint_freq == 0 or step == opt.total_iter
        if saved:
            save(step)
        # Checked every iteration in one process, and at progress lines only under torchrun (a broadcast).
        check_time = time_limit is not None and step < opt.total_iter
        if check_time and (not world.enabled or step % config.logger.print_freq == 0) and out_of_time():
            if not saved:
                save(step)
            log.line(
                f"time limit of {_format_duration(time_limit)} reached after iteration {step} of "
                f"{opt.total_iter}: stopped with a checkpoint there (--resume continues)"
            )
            break

    log.close()
    return TrainResult(model=model, ema=None if ema is None else ema.module, step=step, experiment_dir=root)
