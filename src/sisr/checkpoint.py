"""Reading, recognising and writing network weights.

Three kinds of files hold weights:

- **Official checkpoints** of ArsenalCheng/MMA and eduardzamfir/seemoredetails (BasicSR ``.pth``): a raw
  state dict, ``{"params": ...}``, ``{"params_ema": ...}`` or both. When both are present the EMA weights
  are used, because those are the ones the papers evaluate; ask for ``param_key="params"`` to get the
  others. A missing requested key is an error, never a silent fallback.
- **The project's own checkpoints** (``.pth``): a dict with ``"format": "sisr"``, the architecture, its
  constructor arguments, ``params`` and optionally ``params_ema`` and the training state.
- **safetensors** files, with the architecture and its arguments in the metadata when the project wrote
  them, or bare tensors (for example an official checkpoint converted by someone else).

Every ``.pth`` is read with ``torch.load(weights_only=True)``, so a pickle that carries code is refused
and never executed. The architecture and every hyperparameter the tensors reveal are read off the
tensors; the few that leave no trace (SeemoRe's ``use_shuffle``, ``recursive`` and ``topk``; the
normalisation constants) come from the matching preset and can be overridden by keyword.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sisr.atomic import atomic_write as _atomic_write
from sisr.config import NETWORK_TYPES, NetworkConfig, from_dict
from sisr.errors import SisrError
from sisr.models import ARCHS, PRESETS, build
from sisr.runtime import resolve_device
from sisr.shipped import shipped_models

FORMAT = "sisr"
FORMAT_VERSION = 1

_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


@dataclass
class Weights:
    """What a weights file held, before any network is built.

    Attributes:
        state_dict: Parameter name -> tensor, with any ``module.`` prefix removed.
        source: Where the tensors came from, e.g. ``"params_ema"`` or ``"raw state dict"``.
        arch: The architecture the file declares, or None if it declares none.
        args: The constructor arguments the file declares, or None.
        metadata: Anything else the file records (training config, step, evaluation numbers).
    """

    state_dict: dict[str, Tensor]
    source: str
    arch: str | None = None
    args: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Reading files


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with the little-endian u64 length of a JSON header, then "{".
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER


def _read_safetensors(path: Path) -> Weights:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise SisrError(f"{path}: not a readable safetensors file ({_one_line(err)})") from None
    arch = meta.pop("sisr.arch", None)
    args_json = meta.pop("sisr.args", None)
    try:
        args = json.loads(args_json) if args_json else None
        version = json.loads(meta.pop("sisr.version", str(FORMAT_VERSION)))
        extra = {k.removeprefix("sisr."): json.loads(v) for k, v in meta.items() if k.startswith("sisr.")}
    except json.JSONDecodeError:
        raise SisrError(f"{path}: corrupt sisr metadata in the safetensors header") from None
    _check_version(version, path)
    state_dict = _as_state_dict(tensors, path, "the file")
    return Weights(state_dict, "safetensors", arch, _as_args(args, path, "sisr.args metadata"), extra)


def _check_version(version: Any, path: Path) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SisrError(f"{path}: corrupt checkpoint: format version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise SisrError(
            f"{path}: written by a newer sisr (checkpoint format version {version}; this sisr reads "
            f"versions up to {FORMAT_VERSION}); upgrade sisr to read it"
        )


def _as_args(args: Any, path: Path, what: str) -> dict[str, Any] | None:
    # The declared constructor arguments: None or a mapping of names; their values are checked against
    # the constructor when the network is built (model_from_weights).
    if args is None:
        return None
    if not isinstance(args, Mapping):
        raise SisrError(f"{path}: {what} is {type(args).__name__}, not a mapping of constructor arguments")
    bad = [k for k in args if not isinstance(k, str)]
    if bad:
        raise SisrError(f"{path}: {what}: argument name {bad[0]!r} is not a string")
    return dict(args)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _torch_load(path: Path) -> Any:
    with path.open("rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive; old torch and plain pickle files start with the PROTO opcode.
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":
        raise SisrError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it was not written with
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if "Weights only load failed" in str(err):
            raise SisrError(
                f"{path}: refused: the file holds Python objects other than tensors, and unpickling it "
                "could run code (weights are read with torch.load(weights_only=True) and nothing else)"
            ) from None
        raise SisrError(f"{path}: not a PyTorch checkpoint ({_one_line(err)})") from None


def _as_state_dict(obj: Any, path: Path, what: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise SisrError(f"{path}: {what} is not a state dict (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise SisrError(f"{path}: {what} is not a state dict (entry {bad[0]!r} is not a named tensor)")
    # Every tensor of both networks is floating point; an integer one (int32 weights) would be cast
    # silently by load_state_dict into nonsense.
    odd = [k for k, v in obj.items() if not v.is_floating_point()]
    if odd:
        raise SisrError(
            f"{path}: refused: {len(odd)} tensor(s) of {what} are not floating point (e.g. {odd[0]}: "
            f"{obj[odd[0]].dtype}); network weights are float"
        )
    # DataParallel / DistributedDataParallel wrap every name in "module.".
    wrapped = [k for k in obj if k.startswith("module.")]
    if wrapped and len(wrapped) == len(obj):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    if wrapped:
        plain = next(k for k in obj if not k.startswith("module."))
        raise SisrError(
            f"{path}: {what} mixes names with and without the 'module.' prefix of (Distributed)DataParallel "
            f"({len(wrapped)} of {len(obj)} have it, e.g. {wrapped[0]}; not e.g. {plain}); the file was "
            "assembled from two sources"
        )
    return dict(obj)


def _existing_file(source: str | os.PathLike[str]) -> Path:
    path = Path(source)
    if not path.is_file():
        raise SisrError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SisrError(f"{path}: empty file")
    return path


def read_checkpoint(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a whole checkpoint written by :func:`save_checkpoint` (weights and training state).

    Raises:
        SisrError: The file is missing, empty, not a PyTorch file, carries code, is not a sisr
            checkpoint, or was written by a newer sisr.
    """
    path = _existing_file(source)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise SisrError(f"{path}: not a checkpoint written by sisr")
    _check_version(obj.get("version"), path)
    return dict(obj)


def read_weights(source: str | os.PathLike[str], *, param_key: str | None = None) -> Weights:
    """Reads the tensors of a weights file without building a network.

    Args:
        source: Path of a ``.pth``/``.pt``/``.ckpt`` or ``.safetensors`` file.
        param_key: Which set of weights to take from a file holding several: ``"params_ema"`` or
            ``"params"``. By default ``params_ema`` when present, else ``params``, else the raw dict.

    Raises:
        SisrError: The file is missing, empty, not a checkpoint, carries code, or lacks ``param_key``.
    """
    path = _existing_file(source)
    if _is_safetensors(path):
        if param_key is not None:
            raise SisrError(f"{path}: param_key applies to .pth files; a safetensors file holds one set")
        return _read_safetensors(path)

    obj = _torch_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        _check_version(obj.get("version"), path)
        key = param_key or ("params_ema" if obj.get("params_ema") is not None else "params")
        if obj.get(key) is None:
            raise SisrError(f"{path}: this checkpoint has no {key!r} weights")
        meta = {k: v for k, v in obj.items() if k not in ("params", "params_ema", "optimizer", "scheduler")}
        args = _as_args(obj.get("args") or {}, path, "its 'args' entry")
        return Weights(_as_state_dict(obj[key], path, key), key, obj.get("arch"), args, meta)
    if isinstance(obj, Mapping) and ("params" in obj or "params_ema" in obj):
        key = param_key or ("params_ema" if "params_ema" in obj else "params")
        if key not in obj:
            raise SisrError(f"{path}: no {key!r} entry (it has: {', '.join(map(str, obj))})")
        return Weights(_as_state_dict(obj[key], path, f"entry {key!r}"), key)
    if param_key is not None:
        raise SisrError(f"{path}: a raw state dict has no {param_key!r} entry")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return Weights(_as_state_dict(obj["state_dict"], path, "entry 'state_dict'"), "state_dict")
    return Weights(_as_state_dict(obj, path, "the file"), "raw state dict")


# ---------------------------------------------------------------------------------------------------------
# Recognising architectures from their tensors


def _count(state_dict: Mapping[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _detect_mma(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    first = sd["conv_first.weight"]  # (num_feat, num_in_ch, 3, 3)
    num_feat = first.shape[0]
    ups = sorted(int(m.group(1)) for k in sd if (m := re.match(r"upsample\.(\d+)\.weight$", k)))
    if not ups:
        raise SisrError("MMA weights without an upsampler (upsample.N.weight)")
    if len(ups) == 1 and sd[f"upsample.{ups[0]}.weight"].shape[0] == 9 * num_feat:
        scale = 3
    else:
        scale = 2 ** len(ups)
    return {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": int(sd["conv_last.weight"].shape[0]),
        "num_feat": int(num_feat),
        "num_block": _count(sd, r"body\.(\d+)\."),
        "upscale": scale,
    }


def _detect_seemore(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    first = sd["conv_1.weight"]  # (embedding_dim, in_chans, 3, 3)
    in_chans = int(first.shape[1])
    experts = "body.0.local_block.block.moe_layer.experts"
    num_experts = _count(sd, re.escape(experts) + r"\.(\d+)\.")
    low = [int(sd[f"{experts}.{i}.conv_1.weight"].shape[0]) for i in range(num_experts)]
    # Low-rank width of expert i: linear i+2, exp 2^(i+1), double 2i+2 (equal for i < 2: then "exp").
    spaces = {
        "exp": [2 ** (i + 1) for i in range(num_experts)],
        "linear": [i + 2 for i in range(num_experts)],
        "double": [2 * i + 2 for i in range(num_experts)],
    }
    lr_space = next((name for name, dims in spaces.items() if dims == low), None)
    if lr_space is None:
        raise SisrError(f"SeemoRe experts of widths {low} match no lr_space (linear, exp, double)")
    out = int(sd["upsampler.0.weight"].shape[0])  # scale^2 * in_chans
    scale = round((out / in_chans) ** 0.5)
    if scale * scale * in_chans != out:
        raise SisrError(f"SeemoRe upsampler with {out} channels fits no integer scale")
    return {
        "scale": scale,
        "in_chans": in_chans,
        "num_experts": num_experts,
        "num_layers": _count(sd, r"body\.(\d+)\."),
        "embedding_dim": int(first.shape[0]),
        "global_kernel_size": int(sd["body.0.global_block.block.attn.conv.0.weight"].shape[-1]),
        "lr_space": lr_space,
    }


# What each architecture's tensors must contain to be recognised, and how to read its arguments.
_SIGNATURES = {
    "mma": (("conv_first.weight", "body.0.attn.mamba.mamba.A_log", "conv_last.weight"), _detect_mma),
    "seemore": (
        ("conv_1.weight", "upsampler.0.weight", "body.0.local_block.block.moe_layer.gate.body.2.weight"),
        _detect_seemore,
    ),
}

# Arguments the tensors do not reveal, and the preset they are taken from. Official MMA checkpoints were
# all trained with img_range 1 (sisr's default; not the official constructor's 255); SeemoRe's three hidden
# arguments depend on the variant, recognised by its depth and width.
_HIDDEN: dict[str, tuple[str, ...]] = {
    "mma": ("img_range",),
    "seemore": ("use_shuffle", "recursive", "topk"),
}
_FALLBACK: dict[str, dict[str, Any]] = {"seemore": {"use_shuffle": False, "recursive": 2, "topk": 1}}


def _hidden_args(arch: str, seen: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The hidden arguments of the first preset of ``arch`` whose visible arguments agree with ``seen``."""
    if arch == "mma":  # every official MMA setting, whatever its size, uses img_range 1
        return {"img_range": PRESETS["mma"][1]["img_range"]}, "mma"
    for name, (preset_arch, args) in PRESETS.items():
        if preset_arch == arch and all(args[k] == seen[k] for k in args if k in seen):
            return {k: args[k] for k in _HIDDEN[arch] if k in args}, name
    return dict(_FALLBACK.get(arch, {})), None


def detect(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """Recognises the architecture of a state dict and reads its hyperparameters off the tensors.

    Returns:
        The ``ARCHS`` name and the constructor arguments the tensors determine.

    Raises:
        SisrError: The tensors belong to no known architecture.
    """
    for arch, (keys, read) in _SIGNATURES.items():
        if all(k in state_dict for k in keys):
            try:
                return arch, read(state_dict)
            except (KeyError, IndexError) as err:
                raise SisrError(f"{arch} weights without the tensor {err}") from None
    sample = ", ".join(list(state_dict)[:3])
    raise SisrError(f"not an MMA or SeemoRe state dict ({len(state_dict)} tensors, starting with: {sample})")


# ---------------------------------------------------------------------------------------------------------
# Building networks


def _resolve_source(source: str | os.PathLike[str]) -> Path:
    path = Path(source)
    if path.exists():
        return path
    shipped = shipped_models()
    if isinstance(source, str) and source in shipped:
        return shipped[source]
    looks_like_path = os.sep in str(source) or Path(source).suffix in (".pth", ".pt", ".safetensors", ".ckpt")
    if looks_like_path:
        raise SisrError(f"{source}: no such file")
    known = ", ".join(shipped) if shipped else "none are shipped yet"
    raise SisrError(f"unknown model {str(source)!r}: not a file, nor a shipped model ({known})")


def model_from_weights(weights: Weights, *, overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """Builds the network a :class:`Weights` describes and loads it with ``strict=True``.

    The architecture and arguments declared by the file win over those read from the tensors (they
    carry also what the tensors cannot show); ``overrides`` win over both.

    Raises:
        SisrError: Unknown architecture, unknown override, or tensors that do not fit the network.
    """
    overrides = dict(overrides or {})
    arch, seen = detect(weights.state_dict)
    if weights.arch is not None and weights.arch != arch:
        raise SisrError(f"the file declares architecture {weights.arch!r}, but its tensors are {arch!r}")
    declared = weights.args or {}
    hidden, preset = _hidden_args(arch, seen)
    guessed = [k for k in _HIDDEN[arch] if k not in declared and k not in overrides]
    if preset is None and guessed:
        warnings.warn(
            f"{arch} weights of this size match no preset; assuming "
            f"{', '.join(f'{k}={hidden[k]}' for k in guessed if k in hidden)} (pass them to override)",
            stacklevel=3,
        )
    args = {**seen, **hidden}
    args.update(_checked_args(arch, declared, "the file declares"))
    args.update(_checked_args(arch, overrides, "overrides"))
    model = build(arch, args)
    try:
        model.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as err:
        raise SisrError(_describe_mismatch(model, weights.state_dict, arch, err)) from None
    return model


def _checked_args(arch: str, args: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``args`` checked against the constructor of ``arch``: known names, values of the annotated types."""
    known = _constructor_args(arch)
    unknown = sorted(set(args) - known)
    if unknown:
        raise SisrError(
            f"{where} unknown argument(s) {', '.join(unknown)} for {arch}; known: {', '.join(sorted(known))}"
        )
    # The config reader's checks, so that a value means the same in a file's metadata as in network_g.
    checked = from_dict(NetworkConfig, {"type": NETWORK_TYPES[arch], **args}, "args").args
    return {k: checked[k] for k in args}


def _constructor_args(arch: str) -> set[str]:
    import inspect

    params = inspect.signature(ARCHS[arch].__init__).parameters
    return {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _describe_mismatch(model: nn.Module, sd: Mapping[str, Tensor], arch: str, err: Exception) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} of another shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})"
        )
    return f"the tensors do not fit {arch}: " + ("; ".join(parts) or _one_line(err))


def load_model(
    source: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    param_key: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Loads a network, ready for inference, from a file or a shipped model's name.

    Args:
        source: An official ``.pth`` (raw state dict, ``{"params": ...}`` or ``{"params_ema": ...}``;
            ``params_ema`` is preferred when both are present), a checkpoint written by sisr, a
            ``.safetensors`` file, or the name of a shipped model.
        device: Where to put the network: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        param_key: Take these weights from a file holding several (``"params"`` or ``"params_ema"``).
        **overrides: Constructor arguments that the tensors cannot reveal, e.g. SeemoRe's
            ``use_shuffle``, ``recursive`` and ``topk``, or ``img_range``.

    Returns:
        The network in eval mode, mapping (B, 3, H, W) floats in [0, 1] to (B, 3, sH, sW).

    Raises:
        SisrError: With a one-line message naming the file and the problem.
    """
    dev = resolve_device(device)
    path = _resolve_source(source)
    weights = read_weights(path, param_key=param_key)
    try:
        model = model_from_weights(weights, overrides=overrides)
    except SisrError as err:
        raise SisrError(f"{path}: {err}") from None
    return model.to(dev).eval()


# ---------------------------------------------------------------------------------------------------------
# Writing


def atomic_write(path: str | os.PathLike[str], write: Any) -> None:
    """Creates the folder of ``path`` if needed, then :func:`sisr.atomic.atomic_write`.

    Args:
        path: Final location.
        write: Function that writes the whole file to the temporary path it is given.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, write)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    arch: str,
    args: Mapping[str, Any],
    params: Mapping[str, Tensor],
    params_ema: Mapping[str, Tensor] | None = None,
    **state: Any,
) -> None:
    """Writes a self-describing checkpoint atomically.

    Args:
        path: Output ``.pth`` path.
        arch: ``ARCHS`` name.
        args: Constructor arguments, so that the file alone rebuilds the network.
        params: The network's state dict.
        params_ema: The EMA weights, if any.
        **state: Further entries: ``optimizer``, ``scheduler``, ``step``, ``config``, RNG states, ...
    """
    if arch not in ARCHS:
        raise SisrError(f"unknown architecture {arch!r}")
    obj = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": arch,
        "args": dict(args),
        "params": {k: v.detach().cpu() for k, v in params.items()},
        "params_ema": None if params_ema is None else {k: v.detach().cpu() for k, v in params_ema.items()},
        **state,
    }
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_safetensors(
    path: str | os.PathLike[str],
    *,
    arch: str,
    args: Mapping[str, Any],
    params: Mapping[str, Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Writes weights as ``.safetensors`` with the architecture and arguments in its metadata.

    Args:
        path: Output path.
        arch: ``ARCHS`` name.
        args: Constructor arguments.
        params: The state dict to store.
        metadata: JSON-serialisable extras (config, data, iterations, evaluation numbers).
    """
    from safetensors.torch import save_file

    meta = {
        "sisr.arch": arch,
        "sisr.args": json.dumps(dict(args), sort_keys=True),
        "sisr.version": json.dumps(FORMAT_VERSION),
    }
    meta.update({f"sisr.{k}": json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in params.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
