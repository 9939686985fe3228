"""Typed training and evaluation configs, read from BasicSR-style YAML option files.

The key names are BasicSR's (``name``, ``scale``, ``network_g``, ``datasets``, ``train``, ``val``, ``path``,
``logger``), so the option files of the official MMA and SeemoRe repositories load as they are. Unlike
BasicSR's untyped option dicts, a config here is a tree of dataclasses:

* every key is checked: an unknown key is an error that names its full path and the nearest valid name
  (``train.optim_g.betass: unknown key; did you mean 'betas'?``), a wrong type is an error that names the
  expected type (``train.optim_g.lr: expected a number, got 'abc'``);
* keys that only steer BasicSR's multi-GPU machinery (``num_gpu``, ``dist_params``, ``prefetch_mode``, ...)
  are accepted and *reported*: :func:`load_config` returns them as :class:`Ignored` entries with a reason,
  so nothing is dropped silently;
* ``network_g`` is checked against the constructor signature of the chosen architecture;
* the YAML is read with ``yaml.SafeLoader`` (no code runs), extended to read ``1e-4`` as a number as
  YAML 1.2 does (BasicSR files write ``!!float 1e-4``, which also works) and to reject duplicate keys.

Relative paths are relative to the working directory, as in BasicSR when run from the repository root.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints

import yaml
from torch import nn

from sisr.data.degradations import Degradation
from sisr.errors import SisrError
from sisr.models import ARCHS, SCALE_ARG, build

__all__ = [
    "DATASET_TYPES",
    "NETWORK_TYPES",
    "Config",
    "DatasetConfig",
    "Ignored",
    "IoBackendConfig",
    "LoggerConfig",
    "LossConfig",
    "MetricConfig",
    "NetworkConfig",
    "OptimConfig",
    "PathConfig",
    "SchedulerConfig",
    "TrainConfig",
    "ValConfig",
    "build_network",
    "dry_run",
    "dump_config",
    "from_dict",
    "load_config",
    "network_args",
    "parse_yaml",
    "unset_paths",
    "validate_for_testing",
    "validate_for_training",
]


class Ignored(NamedTuple):
    """A key that was accepted for compatibility with BasicSR but has no effect in sisr."""

    path: str
    reason: str


# The official spelling of each ``sisr.models.ARCHS`` name; ``network_g.type`` is matched case-insensitively.
NETWORK_TYPES: dict[str, str] = {"mma": "MMA", "seemore": "SeemoRe"}

DATASET_TYPES: dict[str, str] = {
    "PairedImageDataset": "GT and LR images from two folders, matched by name through filename_tmpl",
    "GTOnlyDataset": (
        "GT images only (the folder is scanned recursively); the LR image is made on the fly by MATLAB-style "
        "bicubic downscaling"
    ),
    "ImageNetPairedDataset": "the official MMA code's name for GTOnlyDataset (ImageNet pre-training)",
}
_GT_ONLY_TYPES = ("ImageNetPairedDataset", "GTOnlyDataset")

# Network arguments that appear in official option files but that the constructor does not take.
_NETWORK_IGNORED: dict[str, dict[str, tuple[Any, str]]] = {
    "mma": {
        "res_scale": (
            float,
            "not an MMA argument (an EDSR option left in the official test_MMA_x3.yml, where BasicSR's "
            "build_network would reject it)",
        ),
    },
}

_BASICSR_LOADER = "BasicSR data-loader option; sisr's loader does not use it"


# ---------------------------------------------------------------------------------------------------------
# The schema. Defaults are BasicSR's where BasicSR has one.


@dataclass(frozen=True)
class IoBackendConfig:
    """How images are read (BasicSR's ``io_backend``)."""

    type: Literal["disk", "lmdb"] = "disk"


@dataclass(frozen=True)
class DatasetConfig:
    """One entry of ``datasets`` (``train``, ``val``, ``val_N``, ``test`` or ``test_N``).

    ``phase`` and ``scale`` are filled in from the entry's key and the top-level ``scale``, as BasicSR does;
    when given they must agree. The loader fields (``gt_size`` ... ``dataset_enlarge_ratio``) are read for
    the ``train`` entry only, where unset ones get defaults (flips, rotations and shuffling on, 4 workers,
    no enlargement).
    """

    name: str
    type: Literal["PairedImageDataset", "ImageNetPairedDataset", "GTOnlyDataset"]
    dataroot_gt: str | None = None
    dataroot_lq: str | None = None
    meta_info_file: str | None = None
    filename_tmpl: str | None = None  # PairedImageDataset: LR name from GT name; default "{}" (same name)
    io_backend: IoBackendConfig = field(default_factory=IoBackendConfig)
    gt_size: int | None = None
    use_hflip: bool | None = None
    use_rot: bool | None = None
    use_shuffle: bool | None = None
    num_worker_per_gpu: int | None = None
    batch_size_per_gpu: int | None = None
    dataset_enlarge_ratio: int | None = None
    phase: Literal["train", "val", "test"] | None = None
    scale: int | None = None
    # Real-ESRGAN's degradations made on the fly from the GT (train entries only); {} takes its x4plus
    # recipe, see sisr.data.degradations.Degradation.
    degradation: Degradation | None = None

    _IGNORED: ClassVar[dict[str, tuple[Any, str]]] = {
        "prefetch_mode": (Literal["cpu", "cuda"] | None, _BASICSR_LOADER),
        "pin_memory": (bool, _BASICSR_LOADER),
        "task": (Literal["SR"], "sisr does super-resolution only"),
    }

    def _resolve(self, path: str, given: set[str]) -> DatasetConfig:
        tmpl = self.filename_tmpl
        if tmpl is not None and "{}" not in tmpl:
            raise SisrError(f"{path}.filename_tmpl: must contain '{{}}', got {tmpl!r}")
        if tmpl is None and self.type == "PairedImageDataset":
            tmpl = "{}"
        if self.type in _GT_ONLY_TYPES or self.degradation is not None:
            for key in ("dataroot_lq", "filename_tmpl"):
                if key in given:
                    maker = self.type if self.degradation is None else "degradation"
                    raise SisrError(f"{path}.{key}: {maker} makes the LR image from the GT one; remove it")
        for key in ("gt_size", "batch_size_per_gpu", "dataset_enlarge_ratio"):
            _require_positive(getattr(self, key), f"{path}.{key}")
        if self.num_worker_per_gpu is not None and self.num_worker_per_gpu < 0:
            raise SisrError(f"{path}.num_worker_per_gpu: must be >= 0, got {self.num_worker_per_gpu}")
        return dataclasses.replace(
            self,
            dataroot_gt=_expand(self.dataroot_gt),
            dataroot_lq=_expand(self.dataroot_lq),
            meta_info_file=_expand(self.meta_info_file),
            filename_tmpl=tmpl,
        )


@dataclass(frozen=True)
class OptimConfig:
    """``train.optim_g``: the optimizer of the network (torch.optim's arguments and defaults)."""

    type: Literal["Adam", "AdamW"]
    lr: float
    weight_decay: float | None = None  # None: the optimizer's own default (Adam 0, AdamW 0.01)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False

    def _resolve(self, path: str, given: set[str]) -> OptimConfig:
        _require_positive(self.lr, f"{path}.lr")
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise SisrError(f"{path}.betas[{i}]: must be in [0, 1), got {beta}")
        decay = self.weight_decay
        if decay is None:
            decay = 0.01 if self.type == "AdamW" else 0.0
        if decay < 0:
            raise SisrError(f"{path}.weight_decay: must be >= 0, got {decay}")
        return dataclasses.replace(self, weight_decay=decay)


# Which scheduler keys each scheduler type takes (the first is required).
_SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {
    "MultiStepLR": ("milestones", "gamma", "restarts", "restart_weights"),
    "MultiStepRestartLR": ("milestones", "gamma", "restarts", "restart_weights"),
    "CosineAnnealingRestartLR": ("periods", "restart_weights", "eta_min"),
    "CosineAnnealingLR": ("T_max", "eta_min"),
}


@dataclass(frozen=True)
class SchedulerConfig:
    """``train.scheduler``: the learning-rate schedule, stepped once per iteration.

    ``MultiStepLR`` (BasicSR's alias of ``MultiStepRestartLR``) multiplies the rate by ``gamma`` at each
    milestone; ``CosineAnnealingRestartLR`` runs cosine cycles of ``periods`` iterations, cycle i starting
    at ``restart_weights[i]`` times the base rate; ``CosineAnnealingLR`` is one cosine over ``T_max``.
    Keys that the chosen type does not take are errors; the ones it takes get BasicSR's defaults.
    """

    type: Literal["MultiStepLR", "MultiStepRestartLR", "CosineAnnealingRestartLR", "CosineAnnealingLR"]
    milestones: tuple[int, ...] | None = None
    gamma: float | None = None
    restarts: tuple[int, ...] | None = None
    restart_weights: tuple[float, ...] | None = None
    periods: tuple[int, ...] | None = None
    eta_min: float | None = None
    T_max: int | None = None  # torch's name

    def _resolve(self, path: str, given: set[str]) -> SchedulerConfig:
        takes = _SCHEDULER_KEYS[self.type]
        for key in sorted(given - {"type", *takes}):
            raise SisrError(f"{path}.{key}: not an option of {self.type} (it takes {', '.join(takes)})")
        if takes[0] not in given:
            raise SisrError(f"{path}.{takes[0]}: missing required key (for {self.type})")
        if self.type in ("MultiStepLR", "MultiStepRestartLR"):
            assert self.milestones is not None
            if list(self.milestones) != sorted(self.milestones):
                raise SisrError(f"{path}.milestones: must be increasing, got {list(self.milestones)}")
            restarts = self.restarts if self.restarts is not None else (0,)
            weights = self.restart_weights if self.restart_weights is not None else (1.0,)
            if len(restarts) != len(weights):
                raise SisrError(f"{path}: restarts and restart_weights must have the same length")
            gamma = self.gamma if self.gamma is not None else 0.1
            return dataclasses.replace(self, gamma=gamma, restarts=restarts, restart_weights=weights)
        if self.type == "CosineAnnealingRestartLR":
            assert self.periods is not None
            for i, period in enumerate(self.periods):
                _require_positive(period, f"{path}.periods[{i}]")
            weights = self.restart_weights if self.restart_weights is not None else (1.0,)
            if len(weights) != len(self.periods):
                raise SisrError(
                    f"{path}.restart_weights: needs one weight per period ({len(self.periods)}), "
                    f"got {len(weights)}"
                )
            eta_min = self.eta_min if self.eta_min is not None else 0.0
            return dataclasses.replace(self, restart_weights=weights, eta_min=eta_min)
        assert self.T_max is not None
        _require_positive(self.T_max, f"{path}.T_max")
        return dataclasses.replace(self, eta_min=self.eta_min if self.eta_min is not None else 0.0)


@dataclass(frozen=True)
class LossConfig:
    """``train.pixel_opt`` / ``train.fft_opt``: a loss and its weight.

    ``FFTLoss`` is SeemoRe's: the L1 distance between the real and imaginary parts of the 2-D real FFTs of
    output and target. ``eps`` is for ``CharbonnierLoss`` only (default 1e-12, BasicSR's).
    """

    type: Literal["L1Loss", "MSELoss", "CharbonnierLoss", "FFTLoss"]
    loss_weight: float = 1.0
    reduction: Literal["mean", "sum", "none"] = "mean"
    eps: float | None = None

    def _resolve(self, path: str, given: set[str]) -> LossConfig:
        if self.type != "CharbonnierLoss":
            if "eps" in given:
                raise SisrError(f"{path}.eps: only CharbonnierLoss takes eps, not {self.type}")
            return self
        eps = self.eps if self.eps is not None else 1e-12
        _require_positive(eps, f"{path}.eps")
        return dataclasses.replace(self, eps=eps)


@dataclass(frozen=True)
class TrainConfig:
    """``train``: optimisation. ``grad_clip`` and ``bf16`` are sisr's additions."""

    optim_g: OptimConfig
    total_iter: int
    scheduler: SchedulerConfig | None = None
    warmup_iter: int = -1  # linear warm-up over this many iterations; -1: none
    ema_decay: float = 0.0  # 0: no exponential moving average of the weights
    ema_warmup: bool = False  # decay min(ema_decay, (1 + t) / (10 + t)) at update t (timm's warm-up)
    pixel_opt: LossConfig | None = None
    fft_opt: LossConfig | None = None
    grad_clip: float | None = None  # clip the gradient's global L2 norm to this; None: no clipping
    bf16: bool = False  # run forward and backward under bfloat16 autocast

    def _resolve(self, path: str, given: set[str]) -> TrainConfig:
        _require_positive(self.total_iter, f"{path}.total_iter")
        if not 0.0 <= self.ema_decay < 1.0:
            raise SisrError(f"{path}.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None:
            _require_positive(self.grad_clip, f"{path}.grad_clip")
        if self.pixel_opt is None and self.fft_opt is None:
            raise SisrError(f"{path}: no loss; give pixel_opt (and optionally fft_opt)")
        return self


@dataclass(frozen=True)
class MetricConfig:
    """One entry of ``val.metrics``; the entry's name is free (``psnr``, ``ssim``, ...)."""

    type: Literal["calculate_psnr", "calculate_ssim"]
    crop_border: int = 0
    test_y_channel: bool = False
    better: Literal["higher", "lower"] = "higher"

    @property
    def kind(self) -> Literal["psnr", "ssim"]:
        """The metric of :mod:`sisr.metrics` that ``type`` (BasicSR's function name) means."""
        return "psnr" if self.type == "calculate_psnr" else "ssim"

    def _resolve(self, path: str, given: set[str]) -> MetricConfig:
        if self.crop_border < 0:
            raise SisrError(f"{path}.crop_border: must be >= 0, got {self.crop_border}")
        return self


@dataclass(frozen=True)
class ValConfig:
    """``val``: validation during training, and the settings of a test run."""

    val_freq: int | None = None  # in iterations; needed for training with validation datasets
    save_img: bool = False
    suffix: str | None = None  # suffix of saved images; None: the experiment name
    self_ensemble: bool = False  # average over the 8 flips/rotations (the "+" results)
    pbar: bool = False
    metrics: dict[str, MetricConfig] | None = None

    _IGNORED: ClassVar[dict[str, tuple[Any, str]]] = {
        "use_chop": (bool, "not read by the official code either; tiled inference is a command-line option"),
    }

    def _resolve(self, path: str, given: set[str]) -> ValConfig:
        if self.val_freq is not None:
            _require_positive(self.val_freq, f"{path}.val_freq")
        return self


@dataclass(frozen=True)
class PathConfig:
    """``path``: weights to start from, a state to resume, and where outputs go.

    ``pretrain_network_g`` is loaded from the entry ``param_key_g`` of the checkpoint (``params`` or
    ``params_ema``); with ``strict_load_g: false`` tensors whose name or shape differ are skipped and
    reported (as when warm-starting a x3 model from a x2 one, whose upsamplers differ).
    """

    pretrain_network_g: str | None = None
    strict_load_g: bool = True
    param_key_g: str | None = "params"
    resume_state: str | None = None
    experiments_root: str | None = None  # None: experiments/<name>
    results_root: str | None = None  # None: results/<name>

    _IGNORED: ClassVar[dict[str, tuple[Any, str]]] = {
        key: (str | None, "derived from experiments_root or results_root and the run name")
        for key in ("models", "training_states", "log", "visualization")
    }

    def _resolve(self, path: str, given: set[str]) -> PathConfig:
        return dataclasses.replace(
            self,
            pretrain_network_g=_expand(self.pretrain_network_g),
            resume_state=_expand(self.resume_state),
            experiments_root=_expand(self.experiments_root),
            results_root=_expand(self.results_root),
        )


@dataclass(frozen=True)
class LoggerConfig:
    """``logger``: how often to log and to save checkpoints (in iterations)."""

    print_freq: int = 100
    save_checkpoint_freq: int = 5000

    _IGNORED: ClassVar[dict[str, tuple[Any, str]]] = {
        "use_tb_logger": (bool, "sisr writes a plain-text log, not TensorBoard events"),
        "wandb": (dict[str, Any] | None, "sisr does not log to Weights & Biases"),
    }

    def _resolve(self, path: str, given: set[str]) -> LoggerConfig:
        _require_positive(self.print_freq, f"{path}.print_freq")
        _require_positive(self.save_checkpoint_freq, f"{path}.save_checkpoint_freq")
        return self


@dataclass(frozen=True)
class NetworkConfig:
    """``network_g``: an architecture (a key of ``sisr.models.ARCHS``) and all its constructor arguments.

    In YAML it is BasicSR's flat mapping ``{type: MMA, num_feat: 192, ...}``; arguments not given take the
    constructor's defaults, and the scale argument defaults to the top-level ``scale``.
    """

    arch: str
    args: dict[str, Any]


_LOADER_DEFAULTS: dict[str, Any] = {
    "use_hflip": True,
    "use_rot": True,
    "use_shuffle": True,
    "num_worker_per_gpu": 4,
    "dataset_enlarge_ratio": 1,
}
_DATASET_KEY = re.compile(r"(train|val|test)(_\w+)?")


@dataclass(frozen=True)
class Config:
    """A whole option file."""

    name: str
    scale: int
    network_g: NetworkConfig
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    manual_seed: int | None = None  # None: a random seed, logged
    path: PathConfig = field(default_factory=PathConfig)
    train: TrainConfig | None = None
    val: ValConfig | None = None
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    _IGNORED: ClassVar[dict[str, tuple[Any, str]]] = {
        "model_type": (Literal["SRModel"], "sisr has one model type, BasicSR's SRModel"),
        "num_gpu": (
            int | Literal["auto"],
            "the process count comes from torchrun, the device from --device",
        ),
        "dist_params": (dict[str, Any] | None, "torchrun sets the rendezvous; gloo on CPU, nccl on CUDA"),
        "dist": (bool, "distributed when started by torchrun"),
        "is_train": (bool, "set by the command (sisr train or sisr test)"),
    }

    def _resolve(self, path: str, given: set[str]) -> Config:
        _require_positive(self.scale, "scale")
        key = SCALE_ARG[self.network_g.arch]
        network = self.network_g
        if key not in network.args:  # not given: the top-level scale (not the constructor's default)
            network = NetworkConfig(arch=network.arch, args={**network.args, key: self.scale})
        net_scale = network.args[key]
        if net_scale != self.scale:
            raise SisrError(f"network_g.{key}: is {net_scale} but scale is {self.scale}; they must agree")
        datasets = {}
        for name, dataset in self.datasets.items():
            where = f"datasets.{name}"
            match = _DATASET_KEY.fullmatch(name)
            if match is None or name.startswith("train_"):
                raise SisrError(f"{where}: a dataset key is train, val, val_<N>, test or test_<N>")
            phase = match.group(1)
            if dataset.phase is not None and dataset.phase != phase:
                raise SisrError(f"{where}.phase: is {dataset.phase!r} but the key says {phase!r}")
            if dataset.scale is not None and dataset.scale != self.scale:
                raise SisrError(f"{where}.scale: is {dataset.scale} but scale is {self.scale}")
            dataset = dataclasses.replace(dataset, phase=phase, scale=self.scale)
            if dataset.degradation is not None and phase != "train":
                raise SisrError(
                    f"{where}.degradation: only a train entry degrades on the fly; make a fixed "
                    "degraded set with `sisr prepare degrade` and use it as a paired set"
                )
            if phase == "train":
                dataset = dataclasses.replace(
                    dataset, **{k: v for k, v in _LOADER_DEFAULTS.items() if getattr(dataset, k) is None}
                )
            datasets[name] = dataset
        return dataclasses.replace(self, network_g=network, datasets=datasets)


# ---------------------------------------------------------------------------------------------------------
# The generic strict reader.


def from_dict(cls: type[Any], data: Any, path: str = "", ignored: list[Ignored] | None = None) -> Any:
    """Builds the dataclass ``cls`` from a parsed YAML mapping, checking every key and value.

    Args:
        cls: A dataclass of this module (or any dataclass with typed fields).
        data: The mapping.
        path: Dotted key path of ``data`` in the whole config, for messages ("" at the top).
        ignored: Receives the accepted-but-ignored keys met on the way (see :class:`Ignored`).

    Returns:
        An instance of ``cls``, with defaults filled in and each class's ``_resolve`` step applied.

    Raises:
        SisrError: On an unknown or missing key, or a value of the wrong type or out of range; the message
            starts with the full key path.
    """
    if ignored is None:
        ignored = []
    if not isinstance(data, Mapping):
        raise SisrError(f"{path or 'config'}: expected a mapping, got {_show(data)}")
    _check_finite(data, path)
    if cls is NetworkConfig:
        return _network_from_dict(data, path, ignored)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    skip: dict[str, tuple[Any, str]] = getattr(cls, "_IGNORED", {})
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = _join(path, key)
        if key in fields:
            kwargs[key] = _convert(value, hints[key], key_path, ignored)
        elif key in skip:
            tp, reason = skip[key]
            _convert(value, tp, key_path, [])
            ignored.append(Ignored(key_path, reason))
        else:
            raise SisrError(_unknown_key(key_path, key, [*fields, *skip]))
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            raise SisrError(f"{_join(path, name)}: missing required key")
    obj = cls(**kwargs)
    resolve = getattr(obj, "_resolve", None)
    if resolve is not None:
        obj = resolve(path, {k for k, v in kwargs.items() if v is not None})
    return obj


def _network_from_dict(data: Mapping[str, Any], path: str, ignored: list[Ignored]) -> NetworkConfig:
    if "type" not in data:
        raise SisrError(f"{_join(path, 'type')}: missing required key")
    type_name = data["type"]
    if not isinstance(type_name, str):
        raise SisrError(f"{_join(path, 'type')}: expected a string, got {_show(type_name)}")
    arch = type_name.lower()
    if arch not in ARCHS:
        names = list(NETWORK_TYPES.values())
        raise SisrError(f"{_join(path, 'type')}: unknown network {type_name!r}{_suggest(type_name, names)}")
    init = ARCHS[arch].__init__
    params = {
        name: p
        for name, p in inspect.signature(init).parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    hints = get_type_hints(init)
    skip = _NETWORK_IGNORED.get(arch, {})
    args: dict[str, Any] = {}
    for key, value in data.items():
        key_path = _join(path, key)
        if key == "type":
            continue
        if key in params:
            args[key] = _convert(value, hints.get(key, Any), key_path, ignored)
        elif key in skip:
            tp, reason = skip[key]
            _convert(value, tp, key_path, [])
            ignored.append(Ignored(key_path, reason))
        else:
            raise SisrError(_unknown_key(key_path, key, ["type", *params, *skip]))
    for name, p in params.items():
        if name in args or name == SCALE_ARG[arch]:
            continue
        if p.default is inspect.Parameter.empty:
            raise SisrError(f"{_join(path, name)}: missing required key")
        args[name] = p.default
    return NetworkConfig(arch=arch, args=args)


def _convert(value: Any, tp: Any, path: str, ignored: list[Ignored]) -> Any:
    """Checks ``value`` against the type ``tp`` and returns it in that type (lists become tuples, ...)."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path, ignored)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for alternative in args:
            if alternative is type(None):
                continue
            try:
                return _convert(value, alternative, path, ignored)
            except SisrError:
                pass
        if len(args) == 2 and type(None) in args:  # Optional[X]: X's own message is the clearest
            (inner,) = (a for a in args if a is not type(None))
            _convert(value, inner, path, ignored)
        raise SisrError(f"{path}: expected {_describe(tp)}, got {_show(value)}")
    if value is None:
        raise SisrError(f"{path}: expected {_describe(tp)}, got null (~)")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        choices = [a for a in args if isinstance(a, str)]
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        raise SisrError(f"{path}: expected {_describe(tp)}, got {_show(value)}{hint}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 5e3 -> 5000; BasicSR files write !!float 5e3 for integers
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:  # no count or size in torch or numpy goes beyond int64
                raise SisrError(f"{path}: expected an integer below 2**63, got {_show(value)}")
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > 2**1023:  # float() of it would overflow
                raise SisrError(f"{path}: expected a number, got {_show(value)}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise SisrError(f"{path}: expected {len(args)} items, got {len(value)}")
                items = [
                    _convert(v, t, f"{path}[{i}]", ignored)
                    for i, (v, t) in enumerate(zip(value, args, strict=True))
                ]
            else:
                inner = args[0] if args else Any
                items = [_convert(v, inner, f"{path}[{i}]", ignored) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, Mapping):
            key_type, value_type = args if args else (Any, Any)
            out = {}
            for key, item in value.items():
                if key_type is str and not isinstance(key, str):
                    raise SisrError(f"{_join(path, str(key))}: a key must be a string, got {_show(key)}")
                out[key] = _convert(item, value_type, _join(path, str(key)), ignored)
            return out
    else:
        raise TypeError(f"unsupported type in config schema: {tp!r}")
    raise SisrError(f"{path}: expected {_describe(tp)}, got {_show(value)}")


def _describe(tp: Any) -> str:
    if tp is Any:
        return "anything"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null (~)" if type(None) in args else text
    if origin is Literal:
        choices = ", ".join(repr(a) for a in args)
        return f"one of {choices}" if len(args) > 1 else choices
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {_plural(args[0] if args else Any)}"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, repr(tp))


def _plural(tp: Any) -> str:
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(tp, "items")


def _show(value: Any) -> str:
    if value is None:
        return "null (~)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list ({list(value)!r})" if len(repr(value)) < 60 else "a list"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def _suggest(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:  # a case slip: 'Adamw' for 'AdamW'
        close = [lowered[word.lower()]]
    else:
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_key(key_path: str, key: Any, valid: Sequence[str]) -> str:
    hint = _suggest(str(key), valid)
    if not hint:
        hint = f"; valid keys: {', '.join(valid)}"
    return f"{key_path}: unknown key{hint}"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _require_positive(value: float | None, path: str) -> None:
    if value is not None and value <= 0:
        raise SisrError(f"{path}: must be positive, got {value}")


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path is not None else None


# ---------------------------------------------------------------------------------------------------------
# YAML in and out.


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a number and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) needs a dot in a float, so ``1e-4`` would be the string '1e-4'; YAML 1.2 reads a number.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Dumper(yaml.SafeDumper):
    """Lists inline, mappings as blocks, null as ``~``: the look of BasicSR option files."""


_Dumper.add_representer(
    list, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)
_Dumper.add_representer(type(None), lambda d, _: d.represent_scalar("tag:yaml.org,2002:null", "~"))


_MAX_FLOW_DEPTH = 64


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parses YAML text safely (no code runs); syntax errors become one-line ``SisrError``."""
    # PyYAML takes time quadratic in the depth of [ and { nesting (4 s at 2,000), then recurses past
    # Python's limit: refuse absurd depths at once. Brackets in quoted strings count too, harmlessly.
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    if deepest > _MAX_FLOW_DEPTH:
        raise SisrError(f"{source}: invalid YAML: [ and {{ nested {deepest} deep (at most {_MAX_FLOW_DEPTH})")
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no code runs
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err)
        raise SisrError(f"{where}: invalid YAML: {' '.join(str(problem).split())}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise SisrError(f"{source}: invalid YAML: collections nested too deeply") from None


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not p for p in parts):
        raise SisrError(f"override {item!r}: expected KEY=VALUE, e.g. train.optim_g.lr=1e-4")
    value = parse_yaml(text, f"override {item!r}")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise SisrError(f"override {item!r}: {where} is {_show(child)}, not a mapping")
        node = child
    node[parts[-1]] = value


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> tuple[Config, list[Ignored]]:
    """Reads and checks an option file.

    Args:
        path: The YAML file.
        overrides: ``dotted.key=value`` strings applied before checking, in order; the value is read as
            YAML (``train.optim_g.lr=1e-4``, ``datasets.train.dataroot_gt=/data/DF2K/HR``,
            ``train.optim_g.betas=[0.9,0.99]``, ``path.resume_state=~``). A key may be new, but must
            exist in the schema.

    Returns:
        The config, and the keys accepted for BasicSR compatibility that have no effect, with reasons.

    Raises:
        SisrError: If the file cannot be read or parsed, or a key or value is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SisrError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise SisrError(f"{path}: not a UTF-8 text file") from None
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SisrError(f"{path}: expected a mapping of options at the top, got {_show(data)}")
    for item in overrides:
        _apply_override(data, item)
    ignored: list[Ignored] = []
    try:
        config = from_dict(Config, data, "", ignored)
    except SisrError as err:
        raise SisrError(f"{path}: {err}") from None
    return config, ignored


def _check_finite(data: Any, path: str) -> None:
    """Refuses NaN and infinities (``.nan``, ``.inf``, ``1e400``) anywhere in the data, ignored keys too."""
    if isinstance(data, float) and not math.isfinite(data):
        raise SisrError(f"{path or 'config'}: expected a finite number, got {data}")
    if isinstance(data, Mapping):
        for key, value in data.items():
            _check_finite(value, _join(path, key))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            _check_finite(value, f"{path}[{i}]")


def _plain(obj: Any) -> Any:
    if isinstance(obj, NetworkConfig):
        return {"type": NETWORK_TYPES[obj.arch], **{k: _plain(v) for k, v in obj.args.items()}}
    if dataclasses.is_dataclass(obj):
        values = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
        return {name: _plain(v) for name, v in values if v is not None}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def dump_config(config: Config) -> str:
    """The config as YAML, with every default filled in; unset (None) keys are left out.

    Reading the text back with :func:`load_config` gives an equal config.
    """
    return yaml.dump(_plain(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)


# ---------------------------------------------------------------------------------------------------------
# The network, and the checks of a whole config for one purpose.


def network_args(network: NetworkConfig) -> tuple[str, dict[str, Any]]:
    """``network_g`` as ``(arch, kwargs)`` for :func:`sisr.models.build`."""
    return network.arch, dict(network.args)


def build_network(config: Config) -> nn.Module:
    """Builds the (freshly initialised) network of a config."""
    return build(*network_args(config.network_g), where="network_g")


def unset_paths(config: Config, purpose: Literal["train", "test"]) -> list[str]:
    """Key paths of the file paths that ``purpose`` needs but that are unset (``~``)."""
    missing = []
    for name, dataset in config.datasets.items():
        if purpose == "test" and dataset.phase == "train":
            continue
        if dataset.dataroot_gt is None:
            missing.append(f"datasets.{name}.dataroot_gt")
        if dataset.type == "PairedImageDataset" and dataset.dataroot_lq is None:
            missing.append(f"datasets.{name}.dataroot_lq")
    if purpose == "test" and config.path.pretrain_network_g is None:
        missing.append("path.pretrain_network_g")
    return missing


def _common_warnings(config: Config, require_paths: bool, purpose: Literal["train", "test"]) -> list[str]:
    warnings = []
    missing = unset_paths(config, purpose)
    if missing and require_paths:
        raise SisrError(
            f"{missing[0]}: unset (~); set it in the file or with {missing[0]}=PATH"
            + (f" (also unset: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    warnings += [f"{key}: unset (~); set it before running" for key in missing]
    if config.val is not None and config.val.metrics:
        for name, metric in config.val.metrics.items():
            if metric.crop_border != config.scale:
                warnings.append(
                    f"val.metrics.{name}.crop_border: is {metric.crop_border} but scale is {config.scale}; "
                    f"published results crop 'scale' pixels"
                )
    return warnings


def validate_for_training(config: Config, *, require_paths: bool = True) -> list[str]:
    """Checks that a config can train, beyond the per-key checks of :func:`load_config`.

    Args:
        config: The config.
        require_paths: Whether unset data paths are errors (for a real run) or warnings (for a dry run).

    Returns:
        Warnings: things that will run but are probably not meant.

    Raises:
        SisrError: If training cannot start: no ``train`` dataset or section, a train dataset without
            ``gt_size`` or ``batch_size_per_gpu``, a test dataset, or (with ``require_paths``) an unset path.
    """
    train_set = config.datasets.get("train")
    if train_set is None:
        raise SisrError("datasets.train: missing; training needs a train dataset")
    if config.train is None:
        raise SisrError("train: missing; training needs a train section (optim_g, total_iter, a loss)")
    for key in ("gt_size", "batch_size_per_gpu"):
        if getattr(train_set, key) is None:
            raise SisrError(f"datasets.train.{key}: missing; training needs it")
    assert train_set.gt_size is not None
    if train_set.gt_size % config.scale:
        raise SisrError(
            f"datasets.train.gt_size: {train_set.gt_size} is not a multiple of scale {config.scale}"
        )
    for name, dataset in config.datasets.items():
        if dataset.phase == "test":
            raise SisrError(f"datasets.{name}: training validates on val datasets; rename it val_<N>")
    warnings = _common_warnings(config, require_paths, "train")
    has_val_sets = any(d.phase == "val" for d in config.datasets.values())
    if has_val_sets and config.val is None:
        warnings.append("val: missing, so the val datasets are never used")
    elif has_val_sets and config.val is not None and config.val.val_freq is None:
        raise SisrError("val.val_freq: missing; needed to validate during training")
    elif config.val is not None and not has_val_sets:
        warnings.append("val: given but there is no val dataset, so no validation runs")
    train = config.train
    if train.warmup_iter >= train.total_iter:
        raise SisrError(f"train.warmup_iter: {train.warmup_iter} is not below total_iter {train.total_iter}")
    if train.scheduler is not None and train.scheduler.milestones is not None:
        late = [m for m in train.scheduler.milestones if m >= train.total_iter]
        if late:
            warnings.append(f"train.scheduler.milestones: {late} at or after total_iter {train.total_iter}")
    if config.path.pretrain_network_g is not None and not config.path.strict_load_g:
        warnings.append(
            "path.strict_load_g: false; tensors of pretrain_network_g that do not fit are skipped "
            "and keep their initial values"
        )
    return warnings


def validate_for_testing(config: Config, *, require_paths: bool = True) -> list[str]:
    """Checks that a config can evaluate: at least one val/test dataset, and the weights to test.

    Args:
        config: The config.
        require_paths: Whether unset paths are errors (for a real run) or warnings (for a dry run).

    Returns:
        Warnings: things that will run but are probably not meant.

    Raises:
        SisrError: If there is no dataset to evaluate on, or (with ``require_paths``) a path is unset.
    """
    if not any(d.phase in ("val", "test") for d in config.datasets.values()):
        raise SisrError("datasets: no test_<N> (or val) dataset to evaluate on")
    warnings = _common_warnings(config, require_paths, "test")
    if "train" in config.datasets:
        warnings.append("datasets.train: not used when testing")
    if config.val is None or not config.val.metrics:
        warnings.append("val.metrics: none; outputs are made but not scored")
    return warnings


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dry_run(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    purpose: Literal["train", "test"] = "train",
) -> str:
    """What ``sisr train CONFIG --dry-run`` (or ``sisr test``) prints: the resolved config and a summary.

    The config is loaded and checked for ``purpose`` with unset paths reported rather than fatal, and the
    network is built to count its parameters. The text is valid YAML (the summary is in comments), so it
    can be saved and used as a config.

    Raises:
        SisrError: If the config is wrong (unknown key, bad value, nothing to train on, ...).
    """
    config, ignored = load_config(path, overrides)
    check = validate_for_training if purpose == "train" else validate_for_testing
    warnings = check(config, require_paths=False)
    arch, args = network_args(config.network_g)
    model = build(arch, args, where="network_g")
    lines = [f"# {path}, resolved" + (f" with overrides: {' '.join(overrides)}" if overrides else "")]
    lines.append(dump_config(config).rstrip("\n"))
    lines.append("")
    lines.append(f"# network: {NETWORK_TYPES[arch]}, {_count(model):,} parameters")
    for name, child in model.named_children():
        lines.append(f"#   {name:<20} {type(child).__name__:<16} {_count(child):>12,}")
    if ignored:
        lines.append("# ignored (accepted for BasicSR compatibility, no effect in sisr):")
        lines += [f"#   {item.path}: {item.reason}" for item in ignored]
    if warnings:
        lines.append("# warnings:")
        lines += [f"#   {w}" for w in warnings]
    return "\n".join(lines) + "\n"
