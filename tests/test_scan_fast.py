"""The fast selective scans (fused C++ kernel, chunked PyTorch, the dispatch) against the reference loop.

Relative error of a tensor ``a`` against the reference ``b`` is ``max|a - b| / max|b|`` (the absolute
error when ``b`` is all zeros, e.g. dA at L=1). Outputs and all gradients must agree to 1e-5 in float32.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from sisr.ops import (
    ScanInputs,
    _chunked,
    _fused,
    fused_available,
    selective_scan,
    selective_scan_bidirectional,
    selective_scan_bidirectional_ref,
    selective_scan_ref,
)

# The module itself: the attribute sisr.ops.selective_scan is the function of the same name.
dispatch = importlib.import_module("sisr.ops.selective_scan")

needs_kernel = pytest.mark.skipif(
    not fused_available(),
    reason="compiled kernel sisr.ops._scan_cpu* not built (pip install --no-build-isolation -e .)",
)
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
TOL = 1e-5


def rel_err(a: Tensor, b: Tensor) -> float:
    scale = b.abs().max().item()
    err = (a - b).abs().max().item()
    return err / scale if scale > 0 else err


def make_inputs(
    batch: int = 2,
    d: int = 6,
    length: int = 45,
    n: int = 16,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Realistic magnitudes: softplus(delta + bias) ~ 0.05..0.5, A = -(1..n) perturbed, B, C ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    a_log = torch.log(torch.arange(1, n + 1, dtype=dtype)).repeat(d, 1) + 0.2 * randn(d, n)
    return {
        "u": randn(batch, d, length),
        "delta": randn(batch, d, length) - 2.0,
        "A": -torch.exp(a_log),
        "B": randn(batch, n, length),
        "C": randn(batch, n, length),
        "D": randn(d),
        "z": randn(batch, d, length),
        "delta_bias": 0.5 * randn(d),
    }


def run(fn, x: dict[str, Tensor | None], softplus: bool, reverse: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """Output and gradients (w.r.t. the given tensors) of sum(out * fixed random weights)."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items() if v is not None}
    args = {k: leaves.get(k) for k in NAMES}
    out = fn(
        args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"],
        args["z"], args["delta_bias"], softplus, reverse=reverse,
    )  # fmt: skip
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(99), dtype=out.dtype)
    grads = torch.autograd.grad((out * weight).sum(), list(leaves.values()))
    return out.detach(), dict(zip(leaves, grads, strict=True))


def assert_matches(fn, x: dict[str, Tensor | None], softplus: bool, reverse: bool) -> None:
    out, grads = run(fn, x, softplus, reverse)
    ref_out, ref_grads = run(selective_scan_ref, x, softplus, reverse)
    errors = {"out": rel_err(out, ref_out)}
    errors.update({k: rel_err(grads[k], ref_grads[k]) for k in ref_grads})
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"relative errors above {TOL}: {bad}"


def variant(x: dict[str, Tensor], *, with_d: bool, with_z: bool, with_bias: bool) -> dict[str, Tensor | None]:
    return {**x, "D": x["D"] if with_d else None, "z": x["z"] if with_z else None,
            "delta_bias": x["delta_bias"] if with_bias else None}  # fmt: skip


OPTIONS = [  # (with_d, with_z, with_bias, softplus)
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, True),
    (False, True, False, True),
]
IMPLS = {
    "fused": pytest.param(_fused.selective_scan, marks=needs_kernel, id="fused"),
    "chunked": pytest.param(_chunked.selective_scan, id="chunked"),
}


@pytest.mark.parametrize("fn", IMPLS.values())
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_d,with_z,with_bias,softplus", OPTIONS)
def test_matches_reference(
    fn, reverse: bool, with_d: bool, with_z: bool, with_bias: bool, softplus: bool
) -> None:
    x = variant(make_inputs(), with_d=with_d, with_z=with_z, with_bias=with_bias)
    if not softplus:  # the caller then passes positive step sizes itself
        x["delta"] = F.softplus(x["delta"])
    assert_matches(fn, x, softplus, reverse)


@pytest.mark.parametrize("fn", IMPLS.values())
@pytest.mark.parametrize(
    "batch,length,n",
    [(1, 1, 16), (3, 2, 16), (1, 64, 16), (2, 129, 16), (1, 300, 16), (2, 77, 5), (1, 50, 40)],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_and_state_sizes(fn, batch: int, length: int, n: int, reverse: bool) -> None:
    # 64 and 129 straddle the kernel's checkpoint chunk (64) and the chunked path's chunk (16); n=5 and
    # n=40 are not multiples of the vector width.
    assert_matches(fn, make_inputs(batch=batch, length=length, n=n, seed=length), True, reverse)


@pytest.mark.parametrize("fn", IMPLS.values())
def test_non_contiguous_inputs(fn) -> None:
    x = make_inputs(batch=2, d=5, length=33)

    # Same values, other memory layouts: channels-last style u/delta/z/B, every other element for C.
    def transposed(t: Tensor) -> Tensor:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    strided = {k: transposed(v) if v.dim() == 3 else v for k, v in x.items()}
    strided["C"] = torch.stack([x["C"], x["C"]], dim=-1)[..., 0]
    strided["A"] = transposed(x["A"])
    assert not strided["u"].is_contiguous() and not strided["C"].is_contiguous()
    out = fn(*(strided[k] for k in NAMES), True)
    ref = selective_scan_ref(*(x[k] for k in NAMES), True)
    assert rel_err(out, ref) <= TOL
    assert_matches(fn, strided, True, False)


def two_directions(with_extras: bool) -> tuple[ScanInputs, ScanInputs, Tensor | None]:
    xf, xb = make_inputs(length=70, seed=1), make_inputs(length=70, seed=2)

    def pack(x: dict[str, Tensor]) -> ScanInputs:
        if not with_extras:  # no softplus: the caller passes positive step sizes
            x["delta"] = F.softplus(x["delta"])
        extras = (x["D"], x["delta_bias"]) if with_extras else (None, None)
        return ScanInputs(x["u"], x["delta"], x["A"], x["B"], x["C"], *extras)

    return pack(xf), pack(xb), xf["z"] if with_extras else None


@needs_kernel
@pytest.mark.parametrize("with_extras", [True, False])
def test_bidirectional_matches_two_reference_scans(with_extras: bool) -> None:
    f, b, z = two_directions(with_extras)
    softplus = with_extras
    leaves = [t.clone().requires_grad_() for t in (*f, *b, z) if t is not None]
    ref_leaves = [t.clone().requires_grad_() for t in leaves]

    def unpack(ts: list[Tensor]) -> tuple[ScanInputs, ScanInputs, Tensor | None]:
        k = 7 if with_extras else 5
        pad = () if with_extras else (None, None)
        return ScanInputs(*ts[:k], *pad), ScanInputs(*ts[k : 2 * k], *pad), ts[2 * k] if with_extras else None

    out = _fused.selective_scan_bidirectional(*unpack(leaves), softplus)
    ref = selective_scan_bidirectional_ref(*unpack(ref_leaves), softplus)
    assert rel_err(out, ref) <= TOL
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    grads = torch.autograd.grad((out * weight).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * weight).sum(), ref_leaves)
    errors = [rel_err(g, r) for g, r in zip(grads, ref_grads, strict=True)]
    assert max(errors) <= TOL, errors


def test_bidirectional_dispatch_without_kernel_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused, "available", lambda: False)
    f, b, z = two_directions(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = selective_scan_bidirectional(f, b, z, True)
    assert rel_err(out, selective_scan_bidirectional_ref(f, b, z, True)) <= TOL


@needs_kernel
def test_bidirectional_dispatch_uses_one_fused_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> Tensor:
        raise AssertionError("one-direction path used although the kernel is available")

    monkeypatch.setattr(_chunked, "selective_scan", boom)
    monkeypatch.setattr(_fused, "selective_scan", boom)
    f, b, z = two_directions(True)
    assert (
        rel_err(selective_scan_bidirectional(f, b, z, True), selective_scan_bidirectional_ref(f, b, z, True))
        <= TOL
    )


def test_bidirectional_ref_gates_the_sum_once() -> None:
    # The reference gates each direction; that is (y_f + y_b) * silu(z), as Vim computes it.
    f, b, z = two_directions(True)
    assert z is not None
    y_f = selective_scan_ref(*f[:6], None, f.delta_bias, True)
    y_b = selective_scan_ref(*b[:6], None, b.delta_bias, True, reverse=True)
    assert rel_err(selective_scan_bidirectional_ref(f, b, z, True), (y_f + y_b) * F.silu(z)) <= TOL
    assert rel_err(selective_scan_bidirectional_ref(f, b, None, True), y_f + y_b) <= TOL


def test_public_names() -> None:
    import sisr
    import sisr.ops

    assert set(sisr.ops.__all__) == {
        "ScanInputs",
        "conv1d_silu",
        "conv1d_silu_ref",
        "fused_available",
        "gated_dwconv3x3",
        "gated_dwconv3x3_ref",
        "layer_norm_rows",
        "layer_norm_rows_ref",
        "selective_scan",
        "selective_scan_bidirectional",
        "selective_scan_bidirectional_ref",
        "selective_scan_ref",
    }
    assert sisr.selective_scan is sisr.ops.selective_scan is dispatch.selective_scan
    assert callable(sisr.ops.selective_scan)


@needs_kernel
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_float64(reverse: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused, "_CHUNK", 4)  # 11 positions = three checkpoint chunks, the last ragged
    x = make_inputs(batch=2, d=3, length=11, n=5, dtype=torch.float64, seed=3)
    leaves = [x[k].clone().requires_grad_() for k in NAMES]

    def f(*args: Tensor) -> Tensor:
        return _fused.selective_scan(*args, True, reverse=reverse)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_kernel
def test_gradcheck_bidirectional_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused, "_CHUNK", 4)
    xf = make_inputs(batch=1, d=2, length=9, n=3, dtype=torch.float64, seed=4)
    xb = make_inputs(batch=1, d=2, length=9, n=3, dtype=torch.float64, seed=5)
    keys = ("u", "delta", "A", "B", "C", "D", "delta_bias")
    leaves = [xf[k].clone().requires_grad_() for k in keys] + [xb[k].clone().requires_grad_() for k in keys]
    z = xf["z"].clone().requires_grad_()

    def f(*args: Tensor) -> Tensor:
        return _fused.selective_scan_bidirectional(
            ScanInputs(*args[:7]), ScanInputs(*args[7:14]), args[14], True
        )

    assert torch.autograd.gradcheck(f, [*leaves, z], eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_kernel
def test_every_built_instruction_set_is_correct() -> None:
    # The portable build and the AVX2/AVX-512 builds share the source; check each one that loads here.
    x = make_inputs(length=100)
    ref = selective_scan_ref(*(x[k] for k in NAMES), True)
    tested = 0
    for name in _fused._module_names():
        module = _fused._load(name)
        if module is None:
            continue
        out, *_ = module.fwd(
            [x["u"]], [x["delta"]], [x["A"]], [x["B"]], [x["C"]], [x["D"]], [x["delta_bias"]],
            [False], x["z"], True, False, 64,
        )  # fmt: skip
        assert rel_err(out, ref) <= TOL, name
        tested += 1
    assert tested >= 1


@needs_kernel
def test_dtypes_and_no_grad() -> None:
    x = make_inputs(length=20)
    with torch.no_grad():
        out = _fused.selective_scan(*(x[k] for k in NAMES), True)
    assert out.dtype == torch.float32 and not out.requires_grad
    half = _fused.selective_scan(*(x[k].bfloat16() if k != "A" else x[k] for k in NAMES), True)
    assert half.dtype == torch.bfloat16
    ref = selective_scan_ref(*(x[k].bfloat16() if k != "A" else x[k] for k in NAMES), True)
    assert rel_err(half.float(), ref.float()) <= 1e-2
    x64 = {k: v.double() for k, v in x.items()}
    out64 = _fused.selective_scan(*(x64[k] for k in NAMES), True)
    assert out64.dtype == torch.float64
    assert rel_err(out64, selective_scan_ref(*(x64[k] for k in NAMES), True)) <= 1e-12


@needs_kernel
def test_kernel_rejects_bad_shapes() -> None:
    x = make_inputs(length=10)
    with pytest.raises(RuntimeError, match="B has shape"):
        _fused.selective_scan(x["u"], x["delta"], x["A"], x["B"][:, :, :5], x["C"])
    with pytest.raises(ValueError, match="real A"):
        _fused.selective_scan(x["u"], x["delta"], x["A"], x["B"][:, None].repeat(1, 2, 1, 1), x["C"])


@needs_kernel
def test_dispatch_uses_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> Tensor:
        raise AssertionError("chunked path used although the kernel is available")

    monkeypatch.setattr(_chunked, "selective_scan", boom)
    x = make_inputs(length=12)
    out = selective_scan(*(x[k] for k in NAMES), True, reverse=True)
    assert rel_err(out, selective_scan_ref(*(x[k] for k in NAMES), True, reverse=True)) <= TOL


def test_dispatch_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused, "available", lambda: False)
    dispatch._warn_fallback.cache_clear()
    x = make_inputs(length=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = selective_scan(*(x[k] for k in NAMES), True)
        out2 = selective_scan(*(x[k] for k in NAMES), True, reverse=True)
    messages = [str(w.message) for w in caught if "compiled selective-scan kernel" in str(w.message)]
    assert len(messages) == 1 and "pip install --no-build-isolation" in messages[0]
    assert rel_err(out1, selective_scan_ref(*(x[k] for k in NAMES), True)) <= TOL
    assert rel_err(out2, selective_scan_ref(*(x[k] for k in NAMES), True, reverse=True)) <= TOL


def test_fused_module_imports_without_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate an install without the extension: every kernel import fails.
    real_import = importlib.import_module

    def no_kernel(name: str, *args: object) -> object:
        if name.startswith("sisr.ops._scan_cpu"):
            raise ImportError(name)
        return real_import(name, *args)

    _fused._load.cache_clear()
    _fused._kernel.cache_clear()
    monkeypatch.setattr(importlib, "import_module", no_kernel)
    try:
        assert not fused_available()
        with pytest.raises(RuntimeError, match="not available"):
            _fused.selective_scan(*(make_inputs(length=4)[k] for k in ("u", "delta", "A", "B", "C")))
    finally:
        _fused._load.cache_clear()
        _fused._kernel.cache_clear()


def test_chunked_grouped_b_c_and_segments() -> None:
    x = make_inputs(batch=1, d=6, length=50)
    g = torch.Generator().manual_seed(7)
    B = torch.randn(1, 3, 16, 50, generator=g)  # 3 groups of 2 channels
    C = torch.randn(1, 3, 16, 50, generator=g)
    args = (x["u"], x["delta"], x["A"], B, C, x["D"], x["z"], x["delta_bias"], True)
    ref = selective_scan_ref(*args)
    assert rel_err(_chunked.selective_scan(*args), ref) <= TOL
    # Several segments and a ragged last chunk.
    assert rel_err(_chunked.selective_scan(*args, chunk=4, segment=12), ref) <= TOL


def test_softplus_threshold_region() -> None:
    # delta + bias > 20 takes softplus' linear branch; decays then underflow to exactly 0.
    x = make_inputs(length=30)
    x["delta"] = x["delta"] + 22.0 * (torch.arange(30) % 2)
    ref = selective_scan_ref(*(x[k] for k in NAMES), True)
    assert rel_err(_chunked.selective_scan(*(x[k] for k in NAMES), True), ref) <= TOL
    if fused_available():
        assert_matches(_fused.selective_scan, x, True, False)
    assert torch.isfinite(ref).all() and F.softplus(x["delta"]).max() > 20


@needs_kernel
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_extreme_step_sizes_and_growing_states(reverse: bool) -> None:
    # The float kernel has its own exp and softplus: delta + bias over [-40, 40] reaches softplus' tiny
    # (exp(-40)) and linear branches, dt * A down to about -800 (decays clamped to ~1e-38), and a few
    # positive A entries give growing states (positive exponents).
    x = make_inputs(batch=1, d=4, length=40, seed=3)
    x["delta"] = torch.linspace(-40.0, 40.0, 40).roll(7).expand(1, 4, 40).contiguous()
    x["A"][:, ::5] = 0.05
    assert_matches(_fused.selective_scan, x, True, reverse)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_many_channels(threads: int) -> None:
    # Enough channels for the forward to cut them into several slices that the threads take on demand
    # (d=6 elsewhere is one slice), in one and in two directions.
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = make_inputs(batch=2, d=72, length=70, seed=5)
        assert_matches(_fused.selective_scan, x, True, False)
        fwd = ScanInputs(*(x[k] for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")))
        bwd = fwd._replace(u=fwd.u.flip(-1), delta=fwd.delta.roll(3, -1), B=fwd.C, C=fwd.B)
        out = _fused.selective_scan_bidirectional(fwd, bwd, x["z"], True)
        ref = selective_scan_ref(*fwd[:6], None, fwd.delta_bias, True) + selective_scan_ref(
            *bwd[:6], None, bwd.delta_bias, True, reverse=True
        )
        assert rel_err(out, ref * F.silu(x["z"])) <= TOL
    finally:
        torch.set_num_threads(previous)


# bf16 and fp16 inputs go into the kernel as they are; it converts them to float32 as it reads them and
# accumulates in float32, so its results are the float32 kernel's on the same (rounded) inputs, rounded
# once to the input dtype: equal to that exactly, and to the float32 reference within one rounding of
# the dtype (2^-8 relative for bf16, 2^-11 for fp16, of the largest value) plus TOL.
REDUCED = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
PARAMS = ("A", "D", "delta_bias")  # float32 parameters, as under autocast


def rounded(x: dict[str, Tensor | None], dtype: torch.dtype) -> dict[str, Tensor | None]:
    """The inputs in `dtype` (parameters stay float32)."""
    return {k: v if v is None or k in PARAMS else v.to(dtype) for k, v in x.items()}


def widened(x: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
    return {k: None if v is None else v.float() for k, v in x.items()}


@needs_kernel
@pytest.mark.parametrize("dtype", list(REDUCED), ids=["bf16", "fp16"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_d,with_z,with_bias,softplus", OPTIONS[:3])
def test_reduced_precision_inputs(
    dtype: torch.dtype, reverse: bool, with_d: bool, with_z: bool, with_bias: bool, softplus: bool
) -> None:
    x = variant(make_inputs(length=150, seed=11), with_d=with_d, with_z=with_z, with_bias=with_bias)
    if not softplus:
        x["delta"] = F.softplus(x["delta"])
    low = rounded(x, dtype)
    out, grads = run(_fused.selective_scan, low, softplus, reverse)
    assert out.dtype == dtype
    assert all(grads[k].dtype == (torch.float32 if k in PARAMS else dtype) for k in grads)
    # run()'s output weights in `dtype`, as float32, for the float32 scans of the rounded inputs.
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(99), dtype=dtype).float()

    def run32(fn) -> tuple[Tensor, dict[str, Tensor]]:
        leaves = {k: v.detach().float().requires_grad_() for k, v in low.items() if v is not None}
        args = {k: leaves.get(k) for k in NAMES}
        out32 = fn(*(args[k] for k in NAMES[:7]), args["delta_bias"], softplus, reverse=reverse)
        grads32 = torch.autograd.grad((out32 * weight).sum(), list(leaves.values()))
        return out32.detach(), dict(zip(leaves, grads32, strict=True))

    # The float32 kernel on the rounded inputs, rounded once: exactly equal.
    out32, grads32 = run32(_fused.selective_scan)
    assert torch.equal(out, out32.to(dtype))
    for k, g in grads.items():
        assert torch.equal(g, grads32[k].to(g.dtype)), k
    # The float32 reference on the rounded inputs: within one rounding.
    ref_out, ref_grads = run32(selective_scan_ref)
    tol = REDUCED[dtype] + TOL
    errors = {"out": rel_err(out.float(), ref_out)}
    errors.update({k: rel_err(grads[k].float(), ref_grads[k]) for k in grads})
    assert all(v <= tol for v in errors.values()), errors


@needs_kernel
@pytest.mark.parametrize("dtype", list(REDUCED), ids=["bf16", "fp16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_reduced_precision_bidirectional(dtype: torch.dtype, threads: int) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = make_inputs(batch=2, d=40, length=130, seed=7)
        keys = ("u", "delta", "A", "B", "C", "D", "delta_bias")
        fwd = ScanInputs(*(x[k] for k in keys))
        bwd = fwd._replace(u=fwd.u.flip(-1), delta=fwd.delta.roll(3, -1), B=fwd.C, C=fwd.B)

        def low(s: ScanInputs) -> ScanInputs:
            return s._replace(u=s.u.to(dtype), delta=s.delta.to(dtype), B=s.B.to(dtype), C=s.C.to(dtype))

        def wide(s: ScanInputs) -> ScanInputs:
            return s._replace(u=s.u.float(), delta=s.delta.float(), B=s.B.float(), C=s.C.float())

        z = x["z"].to(dtype)
        out = _fused.selective_scan_bidirectional(low(fwd), low(bwd), z, True)
        assert out.dtype == dtype
        out32 = _fused.selective_scan_bidirectional(wide(low(fwd)), wide(low(bwd)), z.float(), True)
        assert torch.equal(out, out32.to(dtype))
        ref = selective_scan_bidirectional_ref(wide(low(fwd)), wide(low(bwd)), z.float(), True)
        assert rel_err(out.float(), ref) <= REDUCED[dtype] + TOL
    finally:
        torch.set_num_threads(previous)


@needs_kernel
def test_reduced_precision_mixed_inputs_compute_in_float32() -> None:
    # Not all sequence inputs in one reduced dtype: everything is taken in float32, as before.
    x = rounded(make_inputs(length=30), torch.bfloat16)
    x["delta"] = x["delta"].float()
    out = _fused.selective_scan(*(x[k] for k in NAMES), True)
    assert out.dtype == torch.bfloat16
    ref = selective_scan_ref(*(widened(x)[k] for k in NAMES), True)
    assert rel_err(out.float(), ref) <= REDUCED[torch.bfloat16] + TOL


@needs_kernel
def test_kernel_rejects_reduced_precision_parameters() -> None:
    x = rounded(make_inputs(length=10), torch.bfloat16)
    with pytest.raises(RuntimeError, match="A has dtype"):
        _fused._kernel().fwd(
            [x["u"]], [x["delta"]], [x["A"].bfloat16()], [x["B"]], [x["C"]], [None], [None],
            [False], None, True, False, 64,
        )  # fmt: skip
