"""Reduced-precision inference: which precision runs where, and the autocast that applies it.

One place decides: :func:`check_precision` refuses a precision the device cannot run natively or
that the architecture's measured gate does not allow, in one line; :func:`autocast` applies it.

- bf16 runs on CUDA and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX). Elsewhere PyTorch
  emulates it, slower than fp32, so it is refused.
- fp16 runs on CUDA and MPS; PyTorch's CPU fp16 convolutions are emulated and slow.

``GATE`` is measured, not assumed: ``benchmarks/precision.py`` runs every shipped model on the
held-out photographs (:mod:`sisr.heldout`) in each precision and compares the uint8 output with
fp32's. A precision is allowed for an architecture when every output is finite and within
``GATE_DB`` (45 dB PSNR) of fp32. The README's "Precision" table is that run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, get_args

from sisr.errors import SisrError

if TYPE_CHECKING:  # torch is imported on use, so that the CLI's choices do not import it
    import torch

__all__ = [
    "GATE",
    "GATE_DB",
    "PRECISIONS",
    "Precision",
    "autocast",
    "check_model_precision",
    "check_precision",
    "device_supports",
]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
GATE_DB = 45.0

# Allowed precisions per architecture, from benchmarks/precision.py (README "Precision"):
# bf16: every shipped model stays finite and >= 45 dB of fp32 on the held-out photographs (the
# lowest is listed there). fp16 could not be measured on a CPU-only machine; spandrel marks SeemoRe as
# not fp16-safe, so fp16 stays refused until it is measured on a GPU.
GATE: dict[str, tuple[str, ...]] = {
    "mma": ("fp32", "bf16"),
    "seemore": ("fp32", "bf16"),
}


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX)."""
    from sisr.runtime import cpu_info

    info = cpu_info()
    if info.flags:
        return info.native_bf16
    import torch

    # No /proc/cpuinfo flags (not Linux): oneDNN's own check (true on AVX512-BF16/AMX CPUs).
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def device_supports(precision: Precision, device: torch.device) -> bool:
    """Whether `device` runs `precision` natively (fp32 runs everywhere)."""
    import torch

    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if device.type == "mps":
        return precision == "fp16"
    return precision == "bf16" and _cpu_has_native_bf16()


def check_precision(precision: str, *, arch: str, device: torch.device) -> None:
    """Refuses, in one line, a precision that is unknown, not native on `device`, or not gated for `arch`.

    Args:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        arch: A key of :data:`GATE` (``sisr.models.arch_of(model)``).
        device: Where the network runs.

    Raises:
        SisrError: Which of the three it is.
    """
    if precision not in PRECISIONS:
        raise SisrError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return
    if not device_supports(precision, device):  # type: ignore[arg-type]
        where = {
            "bf16": "CUDA and CPUs with AVX512-BF16 or AMX",
            "fp16": "CUDA and MPS",
        }[precision]
        raise SisrError(f"precision {precision} is not supported on {device} (it runs on {where})")
    if precision not in GATE.get(arch, ("fp32",)):
        raise SisrError(
            f"precision {precision} is not allowed for {arch}: its output is not within {GATE_DB:g} dB "
            f"of fp32 as measured (allowed: {', '.join(GATE.get(arch, ('fp32',)))})"
        )


def check_model_precision(model: torch.nn.Module, precision: str) -> None:
    """:func:`check_precision` for a sisr network, on the device of its parameters.

    Raises:
        SisrError: As :func:`check_precision`; also for a reduced precision on a network that is not sisr's.
    """
    if precision == "fp32":
        return
    import torch

    from sisr.models import arch_of

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    check_precision(precision, arch=arch_of(model), device=device)


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device) -> Iterator[None]:
    """Runs the enclosed forward in `precision` (autocast); fp32 changes nothing.

    Does not check support: call :func:`check_precision` first.
    """
    if precision == "fp32":
        yield
        return
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
