"""What a network costs: parameters, multiply-adds, latency and peak memory (``sisr profile``).

The conventions are those of SeemoRe's Table 1, where the field's efficiency numbers come from:

- **Multiply-adds (MACs)** are counted for one image whose SR output has a given size (1280x720 by
  default); the LR input is that size divided by the scale, rounded down (426x240 at x3). PyTorch's
  ``torch.utils.flop_counter.FlopCounterMode`` counts them on the meta device (no memory, no arithmetic):
  it counts 2 FLOPs per multiply-add of every convolution and matrix product (``nn.Conv*``,
  ``nn.Linear``, matmul, bmm), biases excluded, and nothing for element-wise ops, normalisation,
  activations, pooling, interpolation or pixel shuffle. MACs are its FLOPs / 2. That is also what the
  counter in SeemoRe's code counts (``basicsr/utils/model_summary.py``: Conv2d and Linear, no biases).
- **The selective scan** of MMA is no aten op. On the meta device each direction is one registered op,
  ``torch.ops.sisr.selective_scan`` (see :func:`sisr.ops.selective_scan`), counted here as
  :func:`scan_macs` = 9·B·L·D·N multiply-adds (state-spaces/mamba#110, as VMamba's fvcore handle counts
  it; B batch, L positions, D channels, N states). It is reported in its own column and not added to
  the MACs, so that the convolution-and-linear count stays comparable with other papers'.
- **SeemoRe's experts**: every image is routed to its top-k low-rank experts, which cost differently
  (ranks 2, 4 and 8 in SeemoRe-T). The count takes the costliest top-k in every layer, an upper bound for
  every image and every set of weights: 44.98 G for SeemoRe-T x2 (the paper: 45 G), against 44.08 G for
  the cheapest routing.
- **Latency** is the median of ``repeats`` runs after one warm-up, in eval mode under
  ``torch.inference_mode()``, batch 1, on a random input.
- **Peak memory** is extra memory. On the CPU each network is timed in a fresh subprocess (which reuses
  freed memory, as the ``sisr`` command does): its peak resident size at the end (``VmHWM``; not
  ``ru_maxrss``, which a child inherits from its parent on Linux) minus its resident size just before the
  first forward pass, so that neither the weights nor anything the parent process did count. On CUDA it
  is ``torch.cuda.max_memory_allocated`` during the runs minus the memory allocated before them.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import sisr
import sisr.ops  # registers torch.ops.sisr.selective_scan, the scan on the meta device
from sisr.atomic import atomic_write
from sisr.checkpoint import load_model, resolve_device, shipped_models
from sisr.errors import SisrError
from sisr.models import PRESETS, create_model, scale_of
from sisr.models.seemore import MoELayer
from sisr.runtime import cpu_info, reuse_freed_memory

__all__ = [
    "DEFAULT_OUTPUT_SIZE",
    "Macs",
    "Profile",
    "count_macs",
    "format_table",
    "machine",
    "parse_size",
    "profile_model",
    "run_profile",
    "scan_macs",
]

DEFAULT_OUTPUT_SIZE = (1280, 720)  # (width, height) of the SR output, as SeemoRe's Table 1
DEFAULT_PRESET_SCALE = 4  # as `sisr upscale`
SCAN_MACS_PER_STATE = 9  # per batch element, position, channel and state (state-spaces/mamba#110)

MACS_NOTE = (
    "MACs: multiply-adds of convolutions and linear layers (biases excluded) for one LR input of "
    "output size / scale, counted by torch.utils.flop_counter (FLOPs / 2); SeemoRe at its costliest top-k "
    "expert routing. Scan MACs: the selective scan at 9·B·L·D·N per direction (state-spaces/mamba#110), "
    "not included in MACs."
)
CPU_MEMORY_NOTE = (
    "Peak memory: peak resident size minus the resident size before the first forward pass, in a fresh "
    "subprocess per network."
)
CUDA_MEMORY_NOTE = (
    "Peak memory: torch.cuda.max_memory_allocated during the runs minus the memory allocated before them."
)


def scan_macs(*, batch: int, length: int, channels: int, state: int) -> int:
    """Multiply-adds of one direction of a selective scan: 9·B·L·D·N (state-spaces/mamba#110)."""
    return SCAN_MACS_PER_STATE * batch * length * channels * state


def _scan_flops(u: torch.Size, delta: torch.Size, A: torch.Size, *rest: Any, **kwargs: Any) -> int:
    """FlopCounterMode's formula for ``sisr::selective_scan``: the arguments are the inputs' shapes."""
    batch, channels, length = u
    return 2 * scan_macs(batch=batch, length=length, channels=channels, state=A[1])  # FLOPs = 2 x MACs


@dataclass(frozen=True)
class Macs:
    """Multiply-adds of one forward pass.

    Attributes:
        conv_linear: Of convolutions and linear layers (matrix products), biases excluded.
        scan: Of the selective scans, at :func:`scan_macs` per direction.
    """

    conv_linear: int
    scan: int


def count_macs(model: nn.Module, input_size: tuple[int, int]) -> Macs:
    """Counts the multiply-adds of one forward pass of ``model`` on one RGB image, on the meta device.

    ``model`` itself is left as it is (a copy moves to the meta device). Mixture-of-experts layers are
    counted at the costliest top-k routing (see the module's docstring).

    Args:
        model: A network mapping (1, 3, H, W) images to their upscaled versions.
        input_size: (width, height) of the input image.

    Returns:
        The multiply-adds of convolutions and linear layers, and of selective scans.

    Raises:
        SisrError: The network refuses the input size (e.g. SeemoRe below its minimum size).
    """
    width, height = input_size
    meta = copy.deepcopy(model).to("meta").eval()
    mixtures = [(name, m) for name, m in meta.named_modules() if isinstance(m, MoELayer)]
    for _, layer in mixtures:
        layer.train()  # every expert runs (the dense path); the cheaper ones are taken off below
    scan_op = torch.ops.sisr.selective_scan
    counter = FlopCounterMode(display=False, custom_mapping={scan_op: _scan_flops})
    with torch.no_grad(), counter:
        meta(torch.empty(1, 3, height, width, device="meta"))
    counts = counter.get_flop_counts()
    scan = counts.get("Global", {}).get(scan_op, 0)
    conv_linear = counter.get_total_flops() - scan
    root = type(meta).__name__  # the counter names modules "<root class>.<path>"
    for name, layer in mixtures:
        experts = (counts.get(f"{root}.{name}.experts.{i}", {}) for i in range(len(layer.experts)))
        costs = sorted(sum(expert.values()) for expert in experts)
        if not all(costs):
            raise RuntimeError(f"no count for the experts of {name}: has FlopCounterMode renamed modules?")
        conv_linear -= sum(costs[: len(costs) - layer.topk])  # keep the costliest topk
    return Macs(conv_linear=conv_linear // 2, scan=scan // 2)


@dataclass(frozen=True)
class Profile:
    """The cost of one network on one image.

    Attributes:
        model: The name it was asked by: a preset, a shipped model or a file.
        weights: ``"none (preset)"``, ``"shipped"`` or the file.
        scale: Upscaling factor.
        input_size: (width, height) of the LR input.
        output_size: (width, height) of the SR output (the asked size rounded down to the scale).
        params: Number of parameters.
        macs: Multiply-adds of convolutions and linear layers.
        scan_macs: Multiply-adds of the selective scans (0 for networks without).
        latency_ms: Median time of one forward pass, or None if not timed.
        peak_memory_mb: Peak extra memory of a forward pass in MiB, or None if not timed.
        note: Why it was not timed, or None.
    """

    model: str
    weights: str
    scale: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    params: int
    macs: int
    scan_macs: int
    latency_ms: float | None
    peak_memory_mb: float | None
    note: str | None = None


def parse_size(text: str) -> tuple[int, int]:
    """Parses ``WIDTHxHEIGHT`` (e.g. ``1280x720``) into positive (width, height).

    Raises:
        SisrError: Not two positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        width, height = (int(p) for p in parts)
        if width > 0 and height > 0:
            return width, height
    raise SisrError(f"output size {text!r} is not WIDTHxHEIGHT with positive integers (e.g. 1280x720)")


def _device(device: str | torch.device) -> torch.device:
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise SisrError(f"profile measures on cpu or cuda only, not {str(device)!r}")
    return dev


def _network(name: str, scale: int | None) -> tuple[nn.Module, str, int]:
    """The network ``name`` means, what weights it has, and its scale.

    A preset (``PRESETS``) is built fresh at ``scale`` (default 4); anything else is loaded by
    :func:`sisr.load_model` (a shipped model's name or a file), and its scale must equal ``scale`` if
    given.
    """
    if name in PRESETS:
        scale = DEFAULT_PRESET_SCALE if scale is None else scale
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            torch.manual_seed(0)  # the same weights in the timing subprocess
            return create_model(name, scale), "none (preset)", scale
    model = load_model(name)
    own = scale_of(model)
    if scale is not None and scale != own:
        raise SisrError(f"{name} is a x{own} model, not x{scale}")
    return model, "shipped" if name in shipped_models() else name, own


def _resident_bytes() -> tuple[int, int]:
    """This process's resident size now and at its peak (VmRSS, VmHWM).

    Not ``ru_maxrss``: on Linux a child started by fork and exec starts with its parent's ``ru_maxrss``.
    """
    sizes = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                sizes[key] = int(value.split()[0]) * 1024  # kB
    return sizes["VmRSS"], sizes["VmHWM"]


def _measure(
    model: nn.Module, input_size: tuple[int, int], device: torch.device, repeats: int
) -> tuple[float, float]:
    """Times ``repeats`` forward passes after a warm-up here; returns (median ms, peak extra MiB)."""
    width, height = input_size
    model = model.to(device).eval()
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _resident_bytes()[0]
    times = []
    with torch.inference_mode():
        for _ in range(1 + repeats):
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _resident_bytes()[1] - base
    return 1000 * statistics.median(times[1:]), max(peak, 0) / 2**20


_CHILD = "import sys; from sisr.analysis.profile import _child; _child(sys.argv[1])"


def _child(job: str) -> None:
    """Entry point of the timing subprocess: measures one network and prints the result as JSON."""
    spec = json.loads(job)
    reuse_freed_memory()
    model, _, _ = _network(spec["model"], spec["scale"])
    ms, mb = _measure(model, tuple(spec["input_size"]), torch.device("cpu"), spec["repeats"])
    print(json.dumps({"latency_ms": ms, "peak_memory_mb": mb}))


def _measure_in_subprocess(
    name: str, scale: int, input_size: tuple[int, int], repeats: int
) -> tuple[float, float]:
    """:func:`_measure` on the CPU in a fresh process, so that its peak memory is its own."""
    job = json.dumps({"model": name, "scale": scale, "input_size": list(input_size), "repeats": repeats})
    env = dict(os.environ)
    root = str(Path(sisr.__file__).resolve().parents[1])  # the child imports this very sisr
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, job], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SisrError(f"{name}: timing failed: {last}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["latency_ms"], result["peak_memory_mb"]


def profile_model(
    name: str,
    *,
    scale: int | None = None,
    output_size: tuple[int, int] = DEFAULT_OUTPUT_SIZE,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    timed: bool = True,
    max_timed_macs: int | None = None,
) -> Profile:
    """Parameters, multiply-adds, latency and peak memory of one network (see the module's conventions).

    Args:
        name: A preset of :data:`sisr.models.PRESETS` (built fresh, without weights), a shipped model's
            name (``"seemore-t-x4"``) or a checkpoint file.
        scale: Upscaling factor of a preset (default 4); for shipped models and files, checked against
            theirs.
        output_size: (width, height) of the SR output; the input is this divided by the scale, rounded
            down.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, for latency and memory.
        repeats: Timed runs after the warm-up.
        timed: Measure latency and memory (else only parameters and multiply-adds, which are instant).
        max_timed_macs: Leave networks with more multiply-adds (scan included) untimed, with a note.

    Raises:
        SisrError: An unknown model, a scale that does not match, an output size the network cannot
            take, or a device this machine lacks.
    """
    dev = _device(device)
    model, weights, scale = _network(name, scale)
    width, height = output_size
    input_size = (width // scale, height // scale)
    if min(input_size) < 1:
        raise SisrError(f"output size {width}x{height} is smaller than the scale x{scale}")
    macs = count_macs(model, input_size)
    latency = memory = note = None
    total = macs.conv_linear + macs.scan
    if timed and max_timed_macs is not None and total > max_timed_macs:
        note = f"not timed: over the limit of {_si(max_timed_macs)}MACs, scan included"
    elif timed and dev.type == "cpu":
        latency, memory = _measure_in_subprocess(name, scale, input_size, repeats)
    elif timed:
        latency, memory = _measure(model, input_size, dev, repeats)
    return Profile(
        model=name,
        weights=weights,
        scale=scale,
        input_size=input_size,
        output_size=(input_size[0] * scale, input_size[1] * scale),
        params=sum(p.numel() for p in model.parameters()),
        macs=macs.conv_linear,
        scan_macs=macs.scan,
        latency_ms=latency,
        peak_memory_mb=memory,
        note=note,
    )


def machine(device: str | torch.device = "cpu") -> str:
    """Names this machine for a benchmark table: the CPU (from /proc/cpuinfo) or the CUDA device."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    cpu = cpu_info().describe()
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def _si(n: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= factor:
            return f"{n / factor:,.2f} {suffix}"
    return f"{n:,.0f} "


_HEADER = (
    "| model | weights | scale | input | params | MACs | scan MACs | latency | peak memory |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|"
)


def _row(p: Profile) -> str:
    if p.latency_ms is None:
        latency = "—"
    else:
        latency = f"{p.latency_ms:,.0f} ms" if p.latency_ms >= 100 else f"{p.latency_ms:.1f} ms"
    memory = "—" if p.peak_memory_mb is None else f"{p.peak_memory_mb:,.0f} MB"
    scan = f"{_si(p.scan_macs)}" if p.scan_macs else "—"
    cells = (
        p.model,
        p.weights,
        f"x{p.scale}",
        f"{p.input_size[0]}x{p.input_size[1]}",
        f"{p.params:,}",
        _si(p.macs),
        scan,
        latency,
        memory,
    )
    return "| " + " | ".join(c.strip() for c in cells) + " |"


def _notes(rows: Sequence[Profile], device: torch.device) -> list[str]:
    notes = [MACS_NOTE]
    if any(p.peak_memory_mb is not None for p in rows):
        notes.append(CUDA_MEMORY_NOTE if device.type == "cuda" else CPU_MEMORY_NOTE)
    for note in dict.fromkeys(p.note for p in rows if p.note):  # each once, in order
        names = ", ".join(f"{p.model} x{p.scale}" for p in rows if p.note == note)
        notes.append(f"{names}: {note}.")
    return notes


def format_table(rows: Sequence[Profile], *, device: str | torch.device = "cpu", repeats: int = 3) -> str:
    """The markdown that ``--markdown`` writes: the machine, the table and the conventions."""
    dev = torch.device(device)
    lines = [f"Machine: {machine(dev)}; latency: median of {repeats} runs after a warm-up.", "", _HEADER]
    lines += [_row(p) for p in rows]
    lines += ["", *(f"- {note}" for note in _notes(rows, dev))]
    return "\n".join(lines) + "\n"


def _check_folder(path: str | os.PathLike[str] | None, option: str) -> None:
    if path is not None and not Path(path).parent.is_dir():
        raise SisrError(f"{option} {path}: no such folder {str(Path(path).parent)!r}")


def _write(path: str | os.PathLike[str], text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    try:
        atomic_write(path, write)
    except OSError as err:
        raise SisrError(f"cannot write {path}: {err.strerror or err}") from None


def run_profile(
    models: Sequence[str],
    *,
    scale: int | None = None,
    output_size: tuple[int, int] = DEFAULT_OUTPUT_SIZE,
    device: str = "cpu",
    json_path: str | os.PathLike[str] | None = None,
    markdown_path: str | os.PathLike[str] | None = None,
    repeats: int = 3,
    timed: bool = True,
    max_timed_macs: int | None = None,
    out: Callable[[str], None] = print,
) -> list[Profile]:
    """Profiles networks, prints a markdown table row by row, and writes ``--json`` / ``--markdown``.

    Everything is checked before the first network runs; the files are written whole or not at all, at
    the end. Arguments as :func:`profile_model`, plus:

    Args:
        models: Names of presets, shipped models or files, one row each.
        json_path: Write ``{"machine", "device", "output_size", "repeats", "notes", "models": [...]}``
            (each model as the fields of :class:`Profile`).
        markdown_path: Write the table of :func:`format_table`.
        out: Where the lines of the table go.

    Returns:
        One :class:`Profile` per model, in order.

    Raises:
        SisrError: No model, fewer than one repeat, a missing output folder, or any error of
            :func:`profile_model`.
    """
    if not models:
        raise SisrError("give at least one model")
    if repeats < 1:
        raise SisrError(f"repeats must be at least 1, got {repeats}")
    dev = _device(device)
    _check_folder(json_path, "--json")
    _check_folder(markdown_path, "--markdown")
    out(f"Machine: {machine(dev)}; output {output_size[0]}x{output_size[1]}")
    out(_HEADER)
    rows = []
    for name in models:
        rows.append(
            profile_model(
                name,
                scale=scale,
                output_size=output_size,
                device=dev,
                repeats=repeats,
                timed=timed,
                max_timed_macs=max_timed_macs,
            )
        )
        out(_row(rows[-1]))
    for note in _notes(rows, dev):
        out(f"- {note}")
    if json_path is not None:
        report = {
            "machine": machine(dev),
            "device": str(dev),
            "output_size": list(output_size),
            "repeats": repeats,
            "notes": _notes(rows, dev),
            "models": [asdict(p) for p in rows],
        }
        _write(json_path, json.dumps(report, indent=2) + "\n")
    if markdown_path is not None:
        _write(markdown_path, format_table(rows, device=dev, repeats=repeats))
    return rows
