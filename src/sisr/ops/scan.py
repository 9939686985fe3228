"""Selective scan (the S6 recurrence of Mamba, Gu & Dao, arXiv 2312.00752) in plain PyTorch.

For every batch element ``b``, channel ``d`` and state index ``n`` the scan runs the recurrence

    h[t] = exp(delta[t] * A[d, n]) * h[t - 1] + delta[t] * B[n, t] * u[t]
    y[t] = sum_n C[n, t] * h[t]

over the positions ``t`` of the sequence, then adds the skip term ``D * u`` and gates with ``silu(z)``.
The semantics are those of ``selective_scan_fn`` in mamba_ssm for real ``A`` and input-dependent ``B``
and ``C``. :func:`selective_scan_ref` is the readable reference loop; gradients come from autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sisr.ops.fused import selective_scan_fast

__all__ = ["selective_scan", "selective_scan_ref"]

# Positions discretised together; bounds the (chunk, batch, d, n) temporaries for long sequences.
_CHUNK = 256


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
    starts = range(0, length, _CHUNK)
    for start in reversed(starts) if reverse else starts:
        stop = min(start + _CHUNK, length)
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
    """Selective scan; see :func:`selective_scan_ref` for the arguments and semantics.

    This is the entry point models call. It runs the fastest path available: the fused kernel on the
    CPU (:mod:`sisr.ops.fused`), ``mamba_ssm``'s kernel on CUDA when it imports, and otherwise the
    chunked plain-PyTorch scan, with a one-time warning that it is slower.
    """
    return selective_scan_fast(
        u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, reverse=reverse
    )
