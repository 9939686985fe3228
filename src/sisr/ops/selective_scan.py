"""Mamba's selective scan (the S6 recurrence of Gu & Dao, arXiv 2312.00752), the public ops.

For every batch element ``b``, channel ``d`` and state index ``n`` the scan runs the recurrence

    h[t] = exp(delta[t] * A[d, n]) * h[t - 1] + delta[t] * B[n, t] * u[t]
    y[t] = sum_n C[n, t] * h[t]

over the positions ``t`` of the sequence, then adds the skip term ``D * u`` and gates with ``silu(z)``.
The semantics are those of ``selective_scan_fn`` in mamba_ssm for real ``A`` and input-dependent ``B``
and ``C``. As in mamba_ssm, each op has a readable reference beside it, under the same name with ``_ref``:

- :func:`selective_scan`, the op networks call: the fused CPU kernel (:mod:`sisr.ops._fused`) on the CPU,
  mamba_ssm's CUDA kernel on CUDA when it imports, else the chunked plain-PyTorch scan
  (:mod:`sisr.ops._chunked`), with a one-time warning on a CPU without the kernel; on the meta device a
  registered op, ``torch.ops.sisr.selective_scan``, that only makes the output's shape (a FLOP counter
  sees it as one op per direction);
- :func:`selective_scan_ref`: a sequential loop over the positions, in plain PyTorch, for tests;
- :func:`selective_scan_bidirectional`: both directions of Vim's "bimamba v2", ``(y_f + y_b) * silu(z)``,
  in one kernel call on the CPU, by the same paths as :func:`selective_scan` otherwise;
- :func:`selective_scan_bidirectional_ref`: the same as two calls of :func:`selective_scan_ref`.

Gradients come from autograd (the fused kernel has its own backward).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sisr.ops import _chunked, _fused

try:  # CUDA kernel of mamba_ssm (same semantics); optional
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_selective_scan_fn
except Exception:  # not installed, or installed without a usable CUDA build
    _mamba_selective_scan_fn = None

__all__ = [
    "ScanInputs",
    "fused_available",
    "selective_scan",
    "selective_scan_bidirectional",
    "selective_scan_bidirectional_ref",
    "selective_scan_ref",
]

# Positions the reference discretises together; bounds its (chunk, batch, d, n) temporaries.
_REF_CHUNK = 256


class ScanInputs(NamedTuple):
    """The per-direction inputs of a selective scan (shapes as in :func:`selective_scan_ref`).

    Attributes:
        u: (batch, d, L).
        delta: (batch, d, L), before bias and softplus.
        A: (d, n), real.
        B: (batch, n, L), or grouped (batch, g, n, L) with g dividing d.
        C: Same layouts as ``B``.
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


def fused_available() -> bool:
    """Whether the compiled CPU kernel is built and loads on this machine (else the CPU path is slower)."""
    return _fused.available()


def _per_channel(t: Tensor, d: int) -> Tensor:
    """Returns B or C as (batch, L, d or 1, n), broadcastable against the state (batch, d, n)."""
    if t.dim() == 3:  # (batch, n, L): shared by all channels
        return t.transpose(1, 2).unsqueeze(2)
    groups = t.shape[1]  # (batch, groups, n, L): channel c uses group c // (d // groups)
    if groups <= 0 or d % groups != 0:
        raise ValueError(f"{groups} groups of B/C do not divide {d} channels")
    return t.repeat_interleave(d // groups, dim=1).permute(0, 3, 1, 2)


def selective_scan_ref(
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
    """Selective scan as a sequential loop over positions (reference implementation).

    Args:
        u: Input, (batch, d, L).
        delta: Step sizes before bias and softplus, (batch, d, L).
        A: Real state matrix (diagonal per channel), (d, n).
        B: Input projection, (batch, n, L) or grouped (batch, g, n, L) with g dividing d.
        C: Output projection, same layouts as ``B``.
        D: Skip weight, (d,).
        z: Gate, (batch, d, L); the output is multiplied by ``silu(z)``.
        delta_bias: Added to ``delta`` before the softplus, (d,).
        delta_softplus: Whether to pass ``delta`` through softplus.
        reverse: Scan from the last position to the first. Equal to flipping ``u``, ``delta``, ``B``,
            ``C`` and ``z`` along L, scanning, and flipping the output back.

    Returns:
        (batch, d, L) in the dtype of ``u``. The arithmetic is float32, or float64 if ``u`` is float64.
    """
    if A.is_complex():
        raise ValueError("selective_scan supports real A only")
    dtype_in = u.dtype
    compute = torch.promote_types(dtype_in, torch.float32)
    u = u.to(compute)
    delta = delta.to(compute)
    A = A.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d, length = u.shape
    B_t = _per_channel(B.to(compute), d)  # (batch, L, d or 1, n)
    C_t = _per_channel(C.to(compute), d)

    du = delta * u
    h = u.new_zeros(batch, d, A.shape[1])  # state (batch, d, n)
    ys: list[Tensor] = []
    starts = range(0, length, _REF_CHUNK)
    for start in reversed(starts) if reverse else starts:
        stop = min(start + _REF_CHUNK, length)
        # Discretise a chunk of positions at once, position first: (stop - start, batch, d, n) each.
        decay = torch.exp(delta[:, :, start:stop].permute(2, 0, 1).unsqueeze(-1) * A)
        drive = du[:, :, start:stop].permute(2, 0, 1).unsqueeze(-1) * B_t[:, start:stop].transpose(0, 1)
        for i in range(stop - start - 1, -1, -1) if reverse else range(stop - start):
            h = decay[i] * h + drive[i]
            ys.append((h * C_t[:, start + i]).sum(-1))  # (batch, d)
    if reverse:
        ys.reverse()  # ys[i] belongs to position i again
    y = torch.stack(ys, dim=-1)  # (batch, d, L)

    if D is not None:
        y = y + u * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(dtype_in)


@functools.cache
def _warn_fallback() -> None:
    warnings.warn(
        "sisr: the compiled selective-scan kernel is unavailable; using the plain-PyTorch chunked scan, "
        f"which is much slower (tens of times). {_fused.BUILD_HINT}",
        RuntimeWarning,
        stacklevel=3,  # the caller of selective_scan
    )


# On the meta device (shapes only: building a network without memory, counting its operations with
# torch.utils.flop_counter) each direction is one registered op, sisr::selective_scan, that only makes the
# output: instant for any L, and seen whole by a FLOP counter (sisr.analysis.profile gives it a formula).
def _scan_shape(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
) -> Tensor:
    """The output of one direction, (batch, d, L) like ``u``, without its values."""
    return torch.empty_like(u)


_scan_meta = torch.library.custom_op(
    "sisr::selective_scan", _scan_shape, mutates_args=(), device_types="meta"
)
_scan_meta.register_fake(_scan_shape)  # the same shapes under FakeTensorMode (torch.compile)


def _scan_meta_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.like = [t if isinstance(t, Tensor) else None for t in inputs[:8]]


def _scan_meta_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    return (*(None if t is None else torch.empty_like(t) for t in ctx.like), None, None)


_scan_meta.register_autograd(_scan_meta_backward, setup_context=_scan_meta_setup)


def _mamba_cuda(x: ScanInputs, z: Tensor | None, delta_softplus: bool, reverse: bool) -> Tensor:
    """mamba_ssm's CUDA kernel; ``reverse`` by flipping the sequence inputs and the output."""
    assert _mamba_selective_scan_fn is not None

    def flip(t: Tensor | None) -> Tensor | None:
        return t.flip(-1) if reverse and t is not None else t

    out = _mamba_selective_scan_fn(
        flip(x.u), flip(x.delta), x.A, flip(x.B), flip(x.C), x.D, flip(z), x.delta_bias, delta_softplus
    )
    return flip(out)


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
    """Selective scan by the fastest available path; see :func:`selective_scan_ref` for the arguments.

    - CPU: the fused kernel; when it is not built, the chunked PyTorch scan, with a one-time
      ``RuntimeWarning`` that says how to build it. Grouped ``B``/``C`` also take the chunked scan.
    - CUDA: mamba_ssm's kernel if it imports, else the chunked scan.
    - Meta: the registered op ``torch.ops.sisr.selective_scan``, which only makes the output (and, for a
      backward pass, the gradients) of the right shapes.
    - Other devices: the chunked scan.

    Every path is tested against :func:`selective_scan_ref` for outputs and gradients.

    Returns:
        (batch, d, L) in the dtype of ``u``.
    """
    if u.device.type == "meta":
        return _scan_meta(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    x = ScanInputs(u, delta, A, B, C, D, delta_bias)
    if u.device.type == "cpu" and _fused.supports(x):
        if _fused.available():
            return _fused.selective_scan(*x[:6], z, delta_bias, delta_softplus, reverse=reverse)
        _warn_fallback()
    elif u.is_cuda and _mamba_selective_scan_fn is not None:
        return _mamba_cuda(x, z, delta_softplus, reverse)
    return _chunked.selective_scan(*x[:6], z, delta_bias, delta_softplus, reverse=reverse)


def _both_directions(
    scan: Callable[..., Tensor],
    forward: ScanInputs,
    backward: ScanInputs,
    z: Tensor | None,
    delta_softplus: bool,
) -> Tensor:
    """``scan`` forwards over ``forward`` plus ``scan`` in reverse over ``backward``, each gated by ``z``."""
    y_f = scan(*forward[:6], z, forward.delta_bias, delta_softplus)
    return y_f + scan(*backward[:6], z, backward.delta_bias, delta_softplus, reverse=True)


def selective_scan_bidirectional(
    forward: ScanInputs,
    backward: ScanInputs,
    z: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Both directions of bimamba v2, ``(y_f + y_b) * silu(z)``, by the fastest available path.

    ``y_f`` scans ``forward`` from the first position to the last, ``y_b`` scans ``backward`` from the
    last to the first; all inputs and the output are in the original order (nothing needs flipping).
    ``y_*`` include their own ``D * u`` skip terms. On the CPU with the kernel, both directions run in one
    fused call; otherwise this is two :func:`selective_scan` calls. Equal to
    :func:`selective_scan_bidirectional_ref`.

    Args:
        forward: Inputs of the forward direction.
        backward: Inputs of the backward direction (same shapes).
        z: Gate shared by both directions, (batch, d, L), or None.
        delta_softplus: Softplus on ``delta + delta_bias`` in both directions.

    Returns:
        (batch, d, L) in the dtype of ``forward.u``.
    """
    if torch.onnx.is_in_onnx_export():  # a graph loop that keeps L (so H and W) dynamic
        return _both_directions(_selective_scan_graph, forward, backward, z, delta_softplus)
    on_cpu = forward.u.device.type == "cpu"
    if on_cpu and _fused.supports(forward) and _fused.supports(backward) and _fused.available():
        return _fused.selective_scan_bidirectional(forward, backward, z, delta_softplus)
    return _both_directions(selective_scan, forward, backward, z, delta_softplus)


def _selective_scan_graph(
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
    """:func:`selective_scan_ref` as one ``torch.ops.higher_order.scan`` over L, for ONNX export.

    The exporter turns it into an ONNX ``Scan`` whose body is the recurrence of one position, so the graph
    stays small and the sequence length (H * W) stays dynamic; the arithmetic is the reference's, in
    float32. Not for eager use: it materialises (L, batch, d, n) discretised inputs.
    """
    from torch._higher_order_ops.scan import scan

    dtype_in = u.dtype
    u, delta, A = u.float(), delta.float(), A.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d, length = u.shape
    # One scan over the batch's sequences end to end, position-major within each: (batch * L, d, n). The
    # carried state then has the static shape (d, n) (the exporter cannot carry a dynamic batch); the
    # decay is zeroed at each sequence's first position (its last when reversed), which restarts the
    # state there exactly (0 * h + drive).
    first = torch.arange(length, device=u.device) == (length - 1 if reverse else 0)  # (L,)
    decay = torch.exp(delta.transpose(1, 2).unsqueeze(-1) * A).masked_fill(first[None, :, None, None], 0.0)
    drive = (delta * u).transpose(1, 2).unsqueeze(-1) * _per_channel(B.float(), d)  # (batch, L, d, n)
    c = _per_channel(C.float(), d)  # (batch, L, d or 1, n)

    def step(h: Tensor, xs: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        a, bu, ct = xs  # (d, n), (d, n), (d or 1, n)
        h = a * h + bu
        return h, (h * ct).sum(-1)

    xs = (decay.flatten(0, 1), drive.flatten(0, 1), c.flatten(0, 1))
    _, ys = scan(step, u.new_zeros(d, A.shape[1]), xs, reverse=reverse)  # (batch * L, d), in order
    y = ys.unflatten(0, (batch, length)).transpose(1, 2)  # (batch, d, L)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


def selective_scan_bidirectional_ref(
    forward: ScanInputs,
    backward: ScanInputs,
    z: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Reference of :func:`selective_scan_bidirectional`: two :func:`selective_scan_ref` loops.

    ``selective_scan_ref(*forward, z=z) + selective_scan_ref(*backward, z=z, reverse=True)`` (with the
    ``delta_bias`` of each direction), which equals ``(y_f + y_b) * silu(z)``.
    """
    return _both_directions(selective_scan_ref, forward, backward, z, delta_softplus)
