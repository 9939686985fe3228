"""Private backend: the chunked selective scan, in plain PyTorch (no compiled code).

:func:`sisr.ops.selective_scan` runs it where neither compiled kernel can: on the CPU without the fused
kernel (with a one-time warning), for grouped ``B``/``C`` on the CPU, and on other devices without
mamba_ssm. Same semantics as :func:`sisr.ops.selective_scan_ref` (Mamba's S6 recurrence, arXiv 2312.00752).
The sequence is cut into segments (to bound memory) and each segment into chunks of ``chunk`` positions:

1. the decays ``a = exp(dt * A)`` and drives ``b = dt * u * B`` of a whole segment are computed at once,
   shape (batch, d, L, n);
2. a scan *inside* every chunk, started from a zero state, runs for all chunks together: ``chunk``
   small steps instead of L, keeping only the final states;
3. the states entering the chunks follow from a short loop over the chunks,
   ``h_next = exp(sum(dt * A over the chunk)) * h + local_last``;
4. a second scan inside all chunks, started from those states, gives the outputs.

Only products of decays appear (never their inverses), so it is as stable as the sequential loop.
Gradients come from autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan"]


def _per_channel(t: Tensor, d: int) -> Tensor:
    """B or C as (batch, d or 1, L, n); grouped (batch, g, n, L) input is expanded to d channels."""
    if t.dim() == 3:  # (batch, n, L), shared by all channels
        return t.transpose(1, 2).unsqueeze(1)
    groups = t.shape[1]
    if groups <= 0 or d % groups != 0:
        raise ValueError(f"{groups} groups of B/C do not divide {d} channels")
    return t.repeat_interleave(d // groups, dim=1).transpose(2, 3)


def _position_major(t: Tensor, chunk: int) -> Tensor:
    """(batch, c, L, ...) with L = nc * chunk -> (chunk, batch, c, nc, ...), contiguous."""
    batch, c, length = t.shape[:3]
    t = t.reshape(batch, c, length // chunk, chunk, *t.shape[3:])
    return t.movedim(3, 0).contiguous()


def _scan_segment(
    dt: Tensor, dtu: Tensor, A: Tensor, B: Tensor, C: Tensor, h: Tensor, chunk: int
) -> tuple[Tensor, Tensor]:
    """Scans one segment.

    Args:
        dt: Step sizes, (batch, d, L).
        dtu: dt * u, (batch, d, L).
        A: (d, n).
        B: (batch, d or 1, L, n).
        C: (batch, d or 1, L, n).
        h: State entering the segment, (batch, d, n).
        chunk: Chunk length.

    Returns:
        y (batch, d, L) and the state leaving the segment (batch, d, n).
    """
    length = dt.shape[-1]
    pad = -length % chunk
    if pad:  # padded steps have decay 1 and drive 0: they leave the state unchanged
        dt, dtu = F.pad(dt, (0, pad)), F.pad(dtu, (0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    # Position-major layout (chunk, batch, d, nc, n): every step of the loops below is contiguous.
    log_a = _position_major(dt, chunk).unsqueeze(-1) * A[:, None, :]
    a = torch.exp(log_a)
    drive = _position_major(dtu, chunk).unsqueeze(-1) * _position_major(B, chunk)
    C = _position_major(C, chunk)
    decay_chunk = torch.exp(log_a.sum(0))  # decay over a whole chunk, (batch, d, nc, n)

    # Pass 1: zero-state scan inside all chunks at once; only the final states are needed.
    local = drive[0]
    for t in range(1, chunk):
        local = a[t] * local + drive[t]
    # States entering each chunk: a short loop over the chunks.
    entering = [h]
    for c in range(local.shape[2]):
        entering.append(decay_chunk[:, :, c] * entering[-1] + local[:, :, c])
    x = torch.stack(entering[:-1], dim=2)  # (batch, d, nc, n)

    # Pass 2: the same scan inside all chunks, now from the true entering states.
    ys = []
    for t in range(chunk):
        x = a[t] * x + drive[t]
        ys.append((x * C[t]).sum(-1))  # (batch, d, nc)
    y = torch.stack(ys, dim=-1).flatten(-2)  # (batch, d, L)
    return y[..., :length], entering[-1]


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
    chunk: int = 16,
    segment: int = 512,
) -> Tensor:
    """Selective scan, chunked; arguments and result as :func:`sisr.ops.selective_scan_ref`.

    Args:
        u: Input, (batch, d, L).
        delta: Step sizes before bias and softplus, (batch, d, L).
        A: Real state matrix, (d, n).
        B: (batch, n, L) or grouped (batch, g, n, L).
        C: Same layouts as ``B``.
        D: Skip weight, (d,).
        z: Gate, (batch, d, L).
        delta_bias: (d,).
        delta_softplus: Whether to pass ``delta + delta_bias`` through softplus.
        reverse: Scan from the last position to the first.
        chunk: Positions per chunk (the length of the inner Python loop).
        segment: Positions materialised at once as (batch, d, segment, n) tensors; bounds memory.

    Returns:
        (batch, d, L) in the dtype of ``u``.
    """
    if A.is_complex():
        raise ValueError("the chunked selective scan supports real A only")
    dtype_in = u.dtype
    compute = torch.promote_types(dtype_in, torch.float32)
    u = u.to(compute)
    dt = delta.to(compute)
    A = A.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    d = u.shape[1]
    Bc = _per_channel(B.to(compute), d)  # (batch, d or 1, L, n)
    Cc = _per_channel(C.to(compute), d)
    dtu = dt * u
    if reverse:  # pointwise terms (D, z) are applied after flipping back
        dt, dtu, Bc, Cc = dt.flip(-1), dtu.flip(-1), Bc.flip(-2), Cc.flip(-2)

    segment = max(chunk, segment - segment % chunk)
    h = u.new_zeros(u.shape[0], d, A.shape[1])
    ys: list[Tensor] = []
    for s0 in range(0, u.shape[-1], segment):
        sl = slice(s0, s0 + segment)
        y, h = _scan_segment(dt[..., sl], dtu[..., sl], A, Bc[:, :, sl], Cc[:, :, sl], h, chunk)
        ys.append(y)
    y = torch.cat(ys, dim=-1)
    if reverse:
        y = y.flip(-1)

    if D is not None:
        y = y + u * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(dtype_in)
