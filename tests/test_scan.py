"""Selective scan against independent implementations: a scalar numpy loop and a quadratic closed form."""

from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sisr.ops import selective_scan, selective_scan_ref

# The module itself: the attribute sisr.ops.selective_scan is the function of the same name.
scan_module = importlib.import_module("sisr.ops.selective_scan")

OPTION_NAMES = ("D", "z", "delta_bias", "delta_softplus")
ALL_OPTIONS = [dict(zip(OPTION_NAMES, on, strict=True)) for on in itertools.product((False, True), repeat=4)]


def option_id(options: dict[str, bool]) -> str:
    return "-".join(k for k, v in options.items() if v) or "plain"


def make_inputs(
    batch: int, d: int, n: int, length: int, dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return dict(
        u=rnd(batch, d, length).to(dtype),
        # Positive-ish steps when softplus is off keep the recurrence stable and realistic.
        delta=(0.5 * rnd(batch, d, length)).exp().to(dtype),
        A=-(0.5 + torch.rand(d, n, generator=g, dtype=torch.float64) * 2).to(dtype),
        B=rnd(batch, n, length).to(dtype),
        C=rnd(batch, n, length).to(dtype),
        D=rnd(d).to(dtype),
        z=rnd(batch, d, length).to(dtype),
        delta_bias=(0.3 * rnd(d)).to(dtype),
    )


def select(inputs: dict[str, torch.Tensor], options: dict[str, bool]) -> dict:
    """Arguments for one call: optional tensors are dropped when their option is off."""
    kwargs: dict = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
    for name in ("D", "z", "delta_bias"):
        kwargs[name] = inputs[name] if options[name] else None
    kwargs["delta_softplus"] = options["delta_softplus"]
    return kwargs


def naive_numpy(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
    """One scalar recurrence per (batch, channel, state) in float64 numpy."""
    u, delta, A, B, C, D, z, delta_bias = (
        None if t is None else np.asarray(t.detach().double()) for t in (u, delta, A, B, C, D, z, delta_bias)
    )
    batch, d, length = u.shape
    n = A.shape[1]
    out = np.zeros((batch, d, length))
    positions = range(length - 1, -1, -1) if reverse else range(length)
    for b in range(batch):
        for c in range(d):
            for s in range(n):
                h = 0.0
                for t in positions:
                    dt = delta[b, c, t] + (delta_bias[c] if delta_bias is not None else 0.0)
                    if delta_softplus:
                        dt = math.log1p(math.exp(dt))
                    h = math.exp(dt * A[c, s]) * h + dt * B[b, s, t] * u[b, c, t]
                    out[b, c, t] += C[b, s, t] * h
            if D is not None:
                out[b, c] += D[c] * u[b, c]
            if z is not None:
                out[b, c] *= z[b, c] / (1.0 + np.exp(-z[b, c]))
    return out


def quadratic_form(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Closed form y_t = sum_{s<=t} C_t exp(A sum_{s<r<=t} delta_r) delta_s B_s u_s, in float64 torch."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    length = u.shape[-1]
    cum = delta.cumsum(-1)  # (b, d, L)
    # seg[b, d, t, s] = sum_{s < r <= t} delta_r, masked to s <= t.
    seg = cum[..., :, None] - cum[..., None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    decay = torch.exp(seg[..., None] * A[None, :, None, None, :]).masked_fill(~causal[..., None], 0.0)
    # kernel[b, d, t, s] = sum_n C[b, n, t] decay[b, d, t, s, n] B[b, n, s]
    kernel = torch.einsum("bnt,bdtsn,bns->bdts", C, decay, B)
    y = torch.einsum("bdts,bds->bdt", kernel, delta * u)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y


def test_quadratic_form_matches_numpy_loop():
    # The two references are written independently; check them against each other first.
    inputs = make_inputs(2, 3, 4, 6, dtype=torch.float64)
    for options in ALL_OPTIONS:
        kwargs = select(inputs, options)
        np.testing.assert_allclose(quadratic_form(**kwargs).numpy(), naive_numpy(**kwargs), atol=1e-10)


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=option_id)
def test_output_matches_naive(options):
    inputs = make_inputs(2, 3, 4, 7)
    kwargs = select(inputs, options)
    out = selective_scan_ref(**kwargs)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 7)
    np.testing.assert_allclose(out.double().numpy(), naive_numpy(**kwargs), rtol=1e-5, atol=1e-5)
    # The public op (fused kernel here) agrees with the reference.
    torch.testing.assert_close(selective_scan(**kwargs), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=option_id)
def test_gradients_match_closed_form(options):
    inputs = make_inputs(2, 3, 4, 5, seed=1)
    grad_out = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(5))
    kw32 = select({k: v.clone().requires_grad_() for k, v in inputs.items()}, options)
    kw64 = select({k: v.double().requires_grad_() for k, v in inputs.items()}, options)
    (selective_scan_ref(**kw32) * grad_out).sum().backward()
    (quadratic_form(**kw64) * grad_out.double()).sum().backward()
    names = [k for k, v in kw32.items() if isinstance(v, torch.Tensor)]
    assert len(names) == 5 + sum(options[k] for k in ("D", "z", "delta_bias"))
    for name in names:
        g32, g64 = kw32[name].grad, kw64[name].grad
        assert g32 is not None, name
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("length", [1, 2, 5])
def test_reverse_equals_flip_scan_flip(length):
    inputs = make_inputs(2, 4, 3, length, seed=2)
    options = dict(D=True, z=True, delta_bias=True, delta_softplus=True)
    kw_rev = select({k: v.clone().requires_grad_() for k, v in inputs.items()}, options)
    kw_flip = select({k: v.clone().requires_grad_() for k, v in inputs.items()}, options)

    out_rev = selective_scan_ref(**kw_rev, reverse=True)
    flipped = {k: (v.flip(-1) if k in ("u", "delta", "B", "C", "z") else v) for k, v in kw_flip.items()}
    out_flip = selective_scan_ref(**flipped).flip(-1)
    torch.testing.assert_close(out_rev, out_flip, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        out_rev.detach().double().numpy(), naive_numpy(**kw_rev, reverse=True), rtol=1e-5, atol=1e-5
    )
    if length > 1:  # the two directions really differ
        assert not torch.allclose(out_rev, selective_scan_ref(**kw_rev), atol=1e-3)

    grad_out = torch.randn_like(out_rev)
    (out_rev * grad_out).sum().backward()
    (out_flip * grad_out).sum().backward()
    for name in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"):
        torch.testing.assert_close(kw_rev[name].grad, kw_flip[name].grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("batch,length", [(1, 1), (3, 1), (1, 9), (3, 11)])
def test_shapes_batch_and_odd_lengths(batch, length):
    inputs = make_inputs(batch, 5, 3, length, seed=3)
    kwargs = select(inputs, dict(D=True, z=True, delta_bias=True, delta_softplus=True))
    out = selective_scan_ref(**kwargs)
    assert out.shape == (batch, 5, length)
    np.testing.assert_allclose(out.double().numpy(), naive_numpy(**kwargs), rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs():
    batch, d, n, length = 2, 6, 4, 7
    g = torch.Generator().manual_seed(4)
    # Layouts as produced inside a Mamba block: channel-last projections, transposed and split.
    u = torch.randn(batch, length, 2 * d, generator=g).transpose(1, 2)[:, :d]
    z = torch.randn(batch, length, 2 * d, generator=g).transpose(1, 2)[:, d:]
    delta = torch.randn(batch, length, d, generator=g).transpose(1, 2)
    x_dbl = torch.randn(batch, length, 2 * n + 1, generator=g)
    B, C = x_dbl[..., 1 : 1 + n].transpose(1, 2), x_dbl[..., 1 + n :].transpose(1, 2)
    A = (-torch.rand(n, d, generator=g) - 0.5).t()
    D = torch.randn(2 * d, generator=g)[::2]
    delta_bias = torch.randn(2 * d, generator=g)[1::2]
    assert not any(t.is_contiguous() for t in (u, z, delta, B, C, A, D, delta_bias))
    args = (u, delta, A, B, C, D)
    kwargs = dict(z=z, delta_bias=delta_bias, delta_softplus=True)
    out = selective_scan_ref(*args, **kwargs)
    contiguous = selective_scan_ref(*(t.contiguous() for t in args), **kwargs)
    torch.testing.assert_close(out, contiguous, rtol=0, atol=0)
    np.testing.assert_allclose(out.double().numpy(), naive_numpy(*args, **kwargs), rtol=1e-5, atol=1e-5)


def test_grouped_B_C_layout():
    inputs = make_inputs(2, 4, 3, 5, seed=6)
    kwargs = select(inputs, dict(D=True, z=True, delta_bias=True, delta_softplus=True))
    plain = selective_scan_ref(**kwargs)
    # (batch, 1, n, L) is the same single group as (batch, n, L).
    one_group = dict(kwargs, B=kwargs["B"][:, None], C=kwargs["C"][:, None])
    torch.testing.assert_close(selective_scan_ref(**one_group), plain, rtol=0, atol=0)
    # Two groups: channels 0-1 use group 0, channels 2-3 use group 1.
    B2 = torch.stack([kwargs["B"], 2.0 * kwargs["B"]], dim=1)
    C2 = torch.stack([kwargs["C"], -kwargs["C"]], dim=1)
    grouped = selective_scan_ref(**dict(kwargs, B=B2, C=C2))
    for channels, scale_b, scale_c in ((slice(0, 2), 1.0, 1.0), (slice(2, 4), 2.0, -1.0)):
        sub = dict(
            kwargs,
            u=kwargs["u"][:, channels],
            delta=kwargs["delta"][:, channels],
            A=kwargs["A"][channels],
            B=scale_b * kwargs["B"],
            C=scale_c * kwargs["C"],
            D=kwargs["D"][channels],
            z=kwargs["z"][:, channels],
            delta_bias=kwargs["delta_bias"][channels],
        )
        torch.testing.assert_close(grouped[:, channels], selective_scan_ref(**sub), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="groups"):
        selective_scan_ref(**dict(kwargs, B=torch.cat([B2, B2[:, :1]], 1), C=torch.cat([C2, C2[:, :1]], 1)))


def test_dtypes():
    inputs = make_inputs(1, 3, 2, 4, seed=7)
    kwargs = select(inputs, dict(D=True, z=True, delta_bias=True, delta_softplus=True))
    ref32 = selective_scan_ref(**kwargs)

    def cast(dtype: torch.dtype) -> dict:
        return {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}

    # Half-precision inputs are computed in float32 and returned in the input dtype.
    low = cast(torch.bfloat16)
    out = selective_scan_ref(**low)
    assert out.dtype == torch.bfloat16
    exact = selective_scan_ref(
        **{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in low.items()}
    )
    torch.testing.assert_close(out, exact.to(torch.bfloat16), rtol=0, atol=0)
    # float64 inputs stay in float64 (the float32 result differs only by rounding).
    out64 = selective_scan_ref(**cast(torch.float64))
    assert out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy(), naive_numpy(**kwargs), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out64.float(), ref32, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="real A"):
        selective_scan_ref(**dict(kwargs, A=kwargs["A"].to(torch.complex64)))


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_float64(reverse):
    inputs = make_inputs(2, 2, 2, 3, dtype=torch.float64, seed=8)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    tensors = tuple(inputs[k].clone().requires_grad_() for k in names)

    def fn(*args: torch.Tensor) -> torch.Tensor:
        u, delta, A, B, C, D, z, delta_bias = args
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, True, reverse=reverse)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_chunked_discretisation(monkeypatch, chunk, reverse):
    # Long sequences are discretised in chunks of positions; chunk borders must not change anything.
    inputs = make_inputs(2, 3, 2, 10, seed=9)
    kwargs = select(inputs, dict(D=True, z=True, delta_bias=True, delta_softplus=True))
    whole = selective_scan_ref(**kwargs, reverse=reverse)
    monkeypatch.setattr(scan_module, "_REF_CHUNK", chunk)
    out = selective_scan_ref(**kwargs, reverse=reverse)
    torch.testing.assert_close(out, whole, rtol=1e-6, atol=1e-6)
    expected = naive_numpy(**kwargs, reverse=reverse)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-5)
