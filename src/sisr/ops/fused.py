"""Fast selective scan: the fused CPU kernel, Mamba's CUDA kernel, and the dispatch between them.

The scan and its arguments are those of :func:`sisr.ops.scan.selective_scan_ref` (Mamba's S6 recurrence,
arXiv 2312.00752; semantics of ``selective_scan_fn`` in mamba_ssm for real ``A`` and input-dependent
``B``, ``C`` of shape (batch, n, L)).

- :func:`selective_scan_fused` runs the compiled CPU kernel (``sisr.ops._scan_cpu*``, built by
  ``pip install --no-build-isolation -e .``; see ``src/sisr/ops/csrc/scan_cpu.cpp``). It fuses
  discretisation, softplus, ``delta_bias``, the ``D`` skip and the ``silu(z)`` gate, keeps the state in
  vector registers, and its backward recomputes the states from per-chunk checkpoints, so no
  (batch, d, L, n) tensor is ever stored. ``reverse=True`` scans from the last position to the first
  without flipping any tensor.
- :func:`selective_scan_bidirectional` runs both directions of Vim's "bimamba v2" in one call and
  returns their sum, gated once: ``(y_f + y_b) * silu(z)``.
- :func:`selective_scan_fast` and :func:`selective_scan_bidirectional_fast` pick the best available
  path: the fused kernel on CPU, mamba_ssm's kernel on CUDA, else the chunked plain-PyTorch scan
  (:func:`sisr.ops.chunked.selective_scan_chunked`) with a one-time warning.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from sisr.ops.chunked import selective_scan_chunked

try:  # CUDA kernel of mamba_ssm (same semantics); optional
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_selective_scan_fn
except Exception:  # not installed, or installed without a usable CUDA build
    _mamba_selective_scan_fn = None

__all__ = [
    "ScanInputs",
    "fused_available",
    "selective_scan_bidirectional",
    "selective_scan_bidirectional_fast",
    "selective_scan_fast",
    "selective_scan_fused",
]

_CHUNK = 64  # positions between two state checkpoints (memory B*D*L*n/_CHUNK per direction)
_BUILD_HINT = (
    "Build it with a C++ compiler and torch installed: `pip install --no-build-isolation -e .` "
    "in the sisr checkout."
)


class ScanInputs(NamedTuple):
    """The per-direction inputs of a selective scan (shapes as in ``selective_scan_ref``).

    Attributes:
        u: (batch, d, L).
        delta: (batch, d, L), before bias and softplus.
        A: (d, n), real.
        B: (batch, n, L).
        C: (batch, n, L).
        D: (d,) skip weight, or None.
        delta_bias: (d,), or None.
    """

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor | None = None
    delta_bias: Tensor | None = None


def _module_names() -> list[str]:
    """Kernel builds to try, best first, for the instruction sets ATen detected on this CPU."""
    capability = torch.backends.cpu.get_cpu_capability()
    names = ["sisr.ops._scan_cpu"]
    if capability in ("AVX2", "AVX512"):
        names.insert(0, "sisr.ops._scan_cpu_avx2")
    if capability == "AVX512":
        names.insert(0, "sisr.ops._scan_cpu_avx512")
    return names


@functools.cache
def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@functools.cache
def _kernel() -> ModuleType | None:
    for name in _module_names():
        module = _load(name)
        if module is not None:
            return module
    return None


def fused_available() -> bool:
    """Whether the compiled CPU kernel is built and loads on this machine."""
    return _kernel() is not None


class _FusedScanFn(torch.autograd.Function):
    """Autograd wrapper of the kernel for one or two directions; per direction 7 tensors
    (u, delta, A, B, C, D, delta_bias), flattened after ``z``."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        kernel: ModuleType,
        reverse: tuple[bool, ...],
        delta_softplus: bool,
        z: Tensor | None,
        *flat: Tensor | None,
    ) -> Tensor:
        dirs = [flat[i : i + 7] for i in range(0, len(flat), 7)]
        save = any(ctx.needs_input_grad)
        chunk = _CHUNK
        out, out_pre, *ckpts = kernel.fwd(
            *(list(column) for column in zip(*dirs, strict=True)),
            list(reverse),
            z,
            delta_softplus,
            save,
            chunk,
        )
        if save:
            ctx.kernel, ctx.reverse, ctx.delta_softplus, ctx.chunk = kernel, reverse, delta_softplus, chunk
            ctx.save_for_backward(z, out_pre, *flat, *ckpts)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        z, out_pre, *rest = ctx.saved_tensors
        ndir = len(ctx.reverse)
        flat, ckpts = rest[: 7 * ndir], rest[7 * ndir :]
        dirs = [flat[i : i + 7] for i in range(0, len(flat), 7)]
        *grads, dz = ctx.kernel.bwd(
            *(list(column) for column in zip(*dirs, strict=True)),
            list(ctx.reverse),
            z,
            out_pre,
            list(ckpts),
            dout,
            ctx.delta_softplus,
            ctx.chunk,
        )
        return (None, None, None, dz, *grads)


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare(x: ScanInputs, dtype: torch.dtype) -> list[Tensor | None]:
    B, C = x.B, x.C
    if B.dim() == 4 and B.shape[1] == 1:  # one group == shared by all channels
        B = B.squeeze(1)
    if C.dim() == 4 and C.shape[1] == 1:
        C = C.squeeze(1)
    if x.A.is_complex() or B.dim() != 3 or C.dim() != 3:
        raise ValueError("the fused selective scan supports real A and B, C of shape (batch, n, L) only")
    return [None if t is None else t.to(dtype) for t in (x.u, x.delta, x.A, B, C, x.D, x.delta_bias)]


def _require_kernel() -> ModuleType:
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError(f"the compiled selective-scan kernel is not available. {_BUILD_HINT}")
    return kernel


def selective_scan_fused(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    reverse: bool = False,
) -> Tensor:
    """Selective scan with the compiled CPU kernel; arguments as ``selective_scan_ref``.

    float64 inputs are computed in float64, everything else in float32; the result has the dtype of
    ``u``. Differentiable in all tensor arguments.

    Raises:
        RuntimeError: If the kernel is not built (see :func:`fused_available`).
        ValueError: For complex ``A`` or grouped ``B``/``C``.
    """
    kernel = _require_kernel()
    dtype = _compute_dtype(u)
    flat = _prepare(ScanInputs(u, delta, A, B, C, D, delta_bias), dtype)
    zc = None if z is None else z.to(dtype)
    out = _FusedScanFn.apply(kernel, (reverse,), delta_softplus, zc, *flat)
    return out.to(u.dtype)


def selective_scan_bidirectional(
    forward: ScanInputs,
    backward: ScanInputs,
    z: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Both directions of bimamba v2 in one kernel call: ``(y_f + y_b) * silu(z)``.

    ``y_f`` scans ``forward`` from the first position to the last, ``y_b`` scans ``backward`` from the
    last to the first; all inputs and the output are in the original order (the kernel reverses by
    indexing, nothing is flipped). ``y_*`` include their own ``D * u`` skip terms. Equal to
    ``selective_scan_ref(*forward, z=z, ...) + selective_scan_ref(*backward, z=z, ..., reverse=True)``.

    Args:
        forward: Inputs of the forward direction.
        backward: Inputs of the backward direction (same shapes).
        z: Gate shared by both directions, (batch, d, L), or None.
        delta_softplus: Softplus on ``delta + delta_bias`` in both directions.

    Returns:
        (batch, d, L) in the dtype of ``forward.u``.
    """
    kernel = _require_kernel()
    dtype = _compute_dtype(forward.u)
    flat = _prepare(forward, dtype) + _prepare(backward, dtype)
    zc = None if z is None else z.to(dtype)
    out = _FusedScanFn.apply(kernel, (False, True), delta_softplus, zc, *flat)
    return out.to(forward.u.dtype)


@functools.cache
def _warn_fallback() -> None:
    warnings.warn(
        "sisr: the compiled selective-scan kernel is unavailable; using the plain-PyTorch chunked scan, "
        f"which is much slower (tens of times). {_BUILD_HINT}",
        RuntimeWarning,
        stacklevel=3,
    )


def _fused_supports(x: ScanInputs) -> bool:
    def shared(t: Tensor) -> bool:
        return t.dim() == 3 or (t.dim() == 4 and t.shape[1] == 1)

    return not x.A.is_complex() and shared(x.B) and shared(x.C)


def _mamba_cuda(x: ScanInputs, z: Tensor | None, delta_softplus: bool, reverse: bool) -> Tensor:
    """mamba_ssm's CUDA kernel; ``reverse`` by flipping the sequence inputs and the output."""
    assert _mamba_selective_scan_fn is not None

    def flip(t: Tensor | None) -> Tensor | None:
        return t.flip(-1) if reverse and t is not None else t

    out = _mamba_selective_scan_fn(
        flip(x.u), flip(x.delta), x.A, flip(x.B), flip(x.C), x.D, flip(z), x.delta_bias, delta_softplus
    )
    return flip(out)


def selective_scan_fast(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    reverse: bool = False,
) -> Tensor:
    """Selective scan by the fastest available path; arguments as ``selective_scan_ref``.

    CPU: the fused kernel, or the chunked PyTorch scan (warning once) when it is not built or the
    inputs are outside what it supports. CUDA: mamba_ssm's kernel if importable, else chunked.
    """
    x = ScanInputs(u, delta, A, B, C, D, delta_bias)
    if u.device.type == "cpu" and _fused_supports(x):
        if fused_available():
            return selective_scan_fused(*x[:6], z, delta_bias, delta_softplus, reverse=reverse)
        _warn_fallback()
    elif u.is_cuda and _mamba_selective_scan_fn is not None:
        return _mamba_cuda(x, z, delta_softplus, reverse)
    return selective_scan_chunked(*x[:6], z, delta_bias, delta_softplus, reverse=reverse)


def selective_scan_bidirectional_fast(
    forward: ScanInputs,
    backward: ScanInputs,
    z: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """:func:`selective_scan_bidirectional` by the fastest available path (see selective_scan_fast)."""
    if (
        forward.u.device.type == "cpu"
        and _fused_supports(forward)
        and _fused_supports(backward)
        and fused_available()
    ):
        return selective_scan_bidirectional(forward, backward, z, delta_softplus)
    y_f = selective_scan_fast(*forward[:6], None, forward.delta_bias, delta_softplus)
    y_b = selective_scan_fast(*backward[:6], None, backward.delta_bias, delta_softplus, reverse=True)
    y = y_f + y_b
    return y if z is None else y * F.silu(z.to(y.dtype)).to(y.dtype)
