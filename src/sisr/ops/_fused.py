"""Private backend: the fused selective scan, a compiled C++ CPU kernel.

The kernel (``sisr.ops._scan_cpu*``, built by ``pip install --no-build-isolation -e .``; see
``src/sisr/ops/csrc/scan_cpu.cpp``) fuses discretisation, softplus, ``delta_bias``, the ``D`` skip and the
``silu(z)`` gate, keeps the state in vector registers, and its backward recomputes the states from
per-chunk checkpoints, so no (batch, d, L, n) tensor is ever stored. ``reverse=True`` scans from the last
position to the first without flipping any tensor, and one call can run both directions of Vim's
"bimamba v2".

The functions here raise ``RuntimeError`` when the kernel is not built: :func:`sisr.ops.selective_scan`
and :func:`sisr.ops.selective_scan_bidirectional` check :func:`available` and :func:`supports` first.
Semantics are those of :func:`sisr.ops.selective_scan_ref` for real ``A`` and ``B``, ``C`` shared by all
channels ((batch, n, L), or one group (batch, 1, n, L)).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["BUILD_HINT", "available", "selective_scan", "selective_scan_bidirectional", "supports"]

_CHUNK = 64  # positions between two state checkpoints (memory B*D*L*n/_CHUNK per direction)
BUILD_HINT = (
    "Build it with a C++ compiler and torch installed: `pip install --no-build-isolation -e .` "
    "in the sisr checkout."
)

# One direction's tensors, in this order (a sisr.ops.ScanInputs is one):
# u, delta (batch, d, L); A (d, n); B, C (batch, n, L) or (batch, 1, n, L); D, delta_bias (d,) or None.
Direction = Sequence[Tensor | None]


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


def available() -> bool:
    """Whether the compiled CPU kernel is built and loads on this machine."""
    return _kernel() is not None


def inference_kernel(
    op: str,
    x: Tensor,
    *others: Tensor | None,
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64),
) -> ModuleType | None:
    """The compiled kernel, for one of its inference-only ops (no backward) on input `x` and the other
    tensor arguments: None unless the kernel is built and has `op`, `x` is a CPU tensor of one of `dtypes`
    and no gradient is wanted for any of them (the caller then runs the op's reference)."""
    kernel = _kernel()
    if kernel is None or not hasattr(kernel, op):
        return None
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *others)):
        return None
    if x.device.type != "cpu" or x.dtype not in dtypes:
        return None
    return kernel


def _shared(t: Tensor) -> bool:
    return t.dim() == 3 or (t.dim() == 4 and t.shape[1] == 1)


def supports(x: Direction) -> bool:
    """Whether the kernel handles these inputs: real ``A``, and ``B``, ``C`` shared by all channels."""
    A, B, C = x[2], x[3], x[4]
    assert A is not None and B is not None and C is not None
    return not A.is_complex() and _shared(B) and _shared(C)


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


_REDUCED = (torch.bfloat16, torch.float16)


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _dtypes(dirs: Sequence[Direction], z: Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """(storage, compute) dtypes of one kernel call.

    The storage dtype is that of u, delta, B, C, z and the output: bfloat16 or float16 when all of them
    already are (autocast's output), so that nothing is cast around the kernel; else float64 for a
    float64 ``u`` and float32 otherwise. The compute dtype (the arithmetic, and A, D, delta_bias) is
    float64 for float64 and float32 for the rest.
    """
    u = dirs[0][0]
    assert u is not None
    if u.dtype == torch.float64:
        return torch.float64, torch.float64
    sequences = [t for x in dirs for t in (x[0], x[1], x[3], x[4])] + ([] if z is None else [z])
    if u.dtype in _REDUCED and all(t is not None and t.dtype == u.dtype for t in sequences):
        return u.dtype, torch.float32
    return torch.float32, torch.float32


def _prepare(x: Direction, storage: torch.dtype, compute: torch.dtype) -> list[Tensor | None]:
    """The 7 tensors of one direction as the kernel takes them: one group squeezed; u, delta, B, C in
    ``storage``, A, D, delta_bias in ``compute``."""
    if not supports(x):
        raise ValueError("the fused selective scan supports real A and B, C of shape (batch, n, L) only")
    u, delta, A, B, C, D, delta_bias = x
    assert B is not None and C is not None
    B = B if B.dim() == 3 else B.squeeze(1)  # one group == shared by all channels
    C = C if C.dim() == 3 else C.squeeze(1)
    return [
        *(_cast(t, storage) for t in (u, delta)),
        _cast(A, compute),
        *(_cast(t, storage) for t in (B, C)),
        *(_cast(t, compute) for t in (D, delta_bias)),
    ]


def _run(
    dirs: Sequence[Direction], reverse: tuple[bool, ...], z: Tensor | None, delta_softplus: bool
) -> Tensor:
    """One kernel call over one or two directions, summed and gated; the result in the dtype of ``u``."""
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError(f"the compiled selective-scan kernel is not available. {BUILD_HINT}")
    u = dirs[0][0]
    assert u is not None
    storage, compute = _dtypes(dirs, z)
    flat = [t for x in dirs for t in _prepare(x, storage, compute)]
    out = _FusedScanFn.apply(kernel, reverse, delta_softplus, _cast(z, storage), *flat)
    return _cast(out, u.dtype)


def selective_scan(
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
    """Selective scan with the compiled CPU kernel; arguments as :func:`sisr.ops.selective_scan_ref`.

    float64 inputs are computed in float64, everything else in float32. bfloat16 or float16 ``u``,
    ``delta``, ``B``, ``C`` and ``z`` (all in the same dtype) go into the kernel as they are: it converts
    them to float32 as it reads them, accumulates in float32 and rounds the output (and the gradients
    of those inputs) to their dtype once. The result has the dtype of ``u``. Differentiable in all
    tensor arguments.

    Raises:
        RuntimeError: If the kernel is not built (see :func:`available`).
        ValueError: For complex ``A`` or grouped ``B``/``C``.
    """
    return _run([(u, delta, A, B, C, D, delta_bias)], (reverse,), z, delta_softplus)


def selective_scan_bidirectional(
    forward: Direction, backward: Direction, z: Tensor | None = None, delta_softplus: bool = False
) -> Tensor:
    """Both directions of bimamba v2 in one kernel call: ``(y_f + y_b) * silu(z)``.

    Arguments and result as :func:`sisr.ops.selective_scan_bidirectional`; the backward direction is
    reversed by indexing, nothing is flipped.

    Raises:
        RuntimeError: If the kernel is not built (see :func:`available`).
        ValueError: For complex ``A`` or grouped ``B``/``C``.
    """
    return _run([forward, backward], (False, True), z, delta_softplus)
