"""MMA's fp32 CPU fast path (see sisr.models.mma) against its reference, and where the reference must run.

Tolerance: max|fast - reference| <= RTOL * max|reference|, RTOL = 1e-5 (measured: about 1e-6; oneDNN and the
per-batch matrix products sum in another order, oneDNN's GELU is the same erf GELU). The perturbed test
weights give outputs up to ~100, and against a float64 run the fast path is as close as the reference.

Under CPU autocast to bf16 only the fast path's matrix products are bf16, so its max abs error from fp32
is at most ``BF16_FACTOR`` = 0.75 times that of autocast's reference, which rounds every layer (measured
here: 0.03-0.06 times; 0.24-0.27 on mma and mma-s with their initial weights).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from _weights import canonical_state_dict, perturbed_state_dict
from sisr.models._fastpath import _onednn_bf16, reference_paths
from sisr.models._fused import fused_convs_available
from sisr.models.mma import MMA, VARIANTS
from sisr.ops import _fused

mma_module = importlib.import_module("sisr.models.mma")
pytestmark = pytest.mark.skipif(not fused_convs_available(), reason="torch without oneDNN")
RTOL = 1e-5
BF16_FACTOR = 0.75
SMALL = dict(num_feat=32, num_block=2, img_range=1.0)


def seeded(model: MMA, seed: int = 0) -> MMA:
    weights = perturbed_state_dict(canonical_state_dict(model.state_dict()), seed=seed, scale=0.1)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def assert_near(fast: torch.Tensor, ref: torch.Tensor) -> None:
    assert fast.shape == ref.shape
    err, scale = (fast - ref).abs().max().item(), ref.abs().max().item()
    assert err <= RTOL * scale, f"max abs difference {err:.3g} above {RTOL:g} x {scale:.3g}"


def fast_and_reference(model: MMA, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        fast = model(x)
        with reference_paths():
            ref = model(x)
    return fast, ref


@pytest.mark.parametrize(
    "config,upscale,batch,size",
    [
        (VARIANTS["mma-s"], 4, 1, (16, 16)),
        (VARIANTS["mma-s"], 2, 2, (13, 19)),
        (SMALL, 2, 2, (11, 17)),
        (SMALL, 4, 1, (9, 14)),
        (SMALL, 3, 1, (10, 7)),
        (SMALL, 2, 1, (1, 6)),  # one row: every output pixel is in the recomputed border
        (SMALL, 4, 2, (2, 1)),
    ],
)
def test_fast_matches_reference(config: dict, upscale: int, batch: int, size: tuple[int, int]) -> None:
    model = seeded(MMA(upscale=upscale, **config))
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(1))
    fast, ref = fast_and_reference(model, x)
    assert fast.shape == ref.shape == (batch, 3, size[0] * upscale, size[1] * upscale)
    assert fast.is_contiguous()
    assert not torch.equal(fast, ref)  # the fast path did run (another summation order)
    assert_near(fast, ref)


@pytest.mark.parametrize("r", [2, 3])
def test_folded_upsampler_is_the_chain_inside_and_is_patched_at_the_border(r: int) -> None:
    # conv -> pixel shuffle -> conv as one 5x5 convolution: equal inside; only the outermost output pixels
    # differ (the chain pads the shuffled map with zeros), which forward_with_last recomputes.
    torch.manual_seed(r)
    up, last = torch.nn.Conv2d(4, 4 * r * r, 3, 1, 1).double(), torch.nn.Conv2d(4, 3, 3, 1, 1).double()
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        chain = last(torch.nn.functional.pixel_shuffle(up(x), r))
        weight, bias = mma_module.conv_shuffle_conv(up, last, r)
        folded = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(x, weight, bias, padding=2), r)
    inside = (..., slice(1, -1), slice(1, -1))
    torch.testing.assert_close(folded[inside], chain[inside], rtol=0, atol=1e-12)
    for edge in (
        (..., 0, slice(None)),
        (..., -1, slice(None)),
        (..., slice(None), 0),
        (..., slice(None), -1),
    ):
        assert (folded[edge] - chain[edge]).abs().max() > 1e-6


@pytest.mark.parametrize("threads", [1, 2])
def test_fast_matches_reference_threads_and_channels_last_input(threads: int) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = seeded(MMA(upscale=2, **SMALL), seed=3)
        x = torch.rand(2, 3, 12, 15, generator=torch.Generator().manual_seed(2))
        fast, ref = fast_and_reference(model, x.contiguous(memory_format=torch.channels_last))
        assert_near(fast, ref)
        assert_near(fast, fast_and_reference(model, x)[1])
    finally:
        torch.set_num_threads(previous)


def test_fast_path_reads_the_current_weights() -> None:
    # Nothing is cached: new weights (load_state_dict, or an in-place edit) change the fast output, which
    # still matches the reference.
    model = seeded(MMA(upscale=2, **SMALL), seed=0)
    x = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(4))
    before, _ = fast_and_reference(model, x)
    seeded(model, seed=5)
    after, ref = fast_and_reference(model, x)
    assert (after - before).abs().max() > 1e-3
    assert_near(after, ref)
    with torch.no_grad():
        model.body[0].ffn.dwconv.weight.mul_(1.5)
        model.body[1].attn.mamba.mamba.x_proj_b.weight.mul_(0.5)
    edited, ref = fast_and_reference(model, x)
    assert (edited - after).abs().max() > 1e-4
    assert_near(edited, ref)


def test_training_runs_the_reference_with_unchanged_gradients() -> None:
    model = seeded(MMA(upscale=2, **SMALL)).train()
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(6), requires_grad=True)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = model(x)
        grads = torch.autograd.grad(out.square().mean(), [x, *model.parameters()])
        return out.detach(), list(grads)

    out, grads = run()
    with reference_paths():
        ref_out, ref_grads = run()
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))


def test_fast_path_is_taken_and_has_no_layout_copies_around_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Mamba mixer's products come out in the layouts their consumers read: no (B, d_inner, L) tensor
    # is copied (the reference copies x, z and both deltas: transposed views into the conv and the scan).
    model = seeded(MMA(upscale=2, **SMALL))
    batch, side = 2, 8
    x = torch.rand(batch, 3, side, side)
    inner = model.body[0].attn.mamba.mamba.d_inner

    def copies(reference: bool) -> int:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            if reference:
                with reference_paths():
                    model(x)
            else:
                model(x)
        shape = [batch, inner, side * side]
        return sum(1 for e in prof.events() if e.name == "aten::copy_" and shape in e.input_shapes)

    assert copies(reference=True) > 0
    assert copies(reference=False) == 0
    calls = []
    monkeypatch.setattr(mma_module, "_matmul", lambda a, b: calls.append(1) or torch.matmul(a, b))
    fast_and_reference(model, x)
    assert calls


def test_autocast_bf16_passes_bf16_into_the_scan_without_casts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under bf16 autocast the reference's layers give the kernel u, delta, B, C, z in bf16 as they made
    # them (no aten::to around the scan), and it returns bf16. (The fast path, where it runs under bf16
    # autocast, keeps its features and the scan in float32: see the bf16 tests below.)
    model = seeded(MMA(upscale=2, **SMALL))
    x = torch.rand(1, 3, 8, 8)
    kernel = _fused._kernel()
    dtypes: list[set[torch.dtype]] = []

    class Spy:
        def fwd(self, u, delta, A, B, C, D, bias, reverse, z, *rest):
            dtypes.append({t.dtype for t in (*u, *delta, *B, *C, z)})
            return kernel.fwd(u, delta, A, B, C, D, bias, reverse, z, *rest)

    monkeypatch.setattr(_fused, "_kernel", lambda: Spy())
    inner, length = model.body[0].attn.mamba.mamba.d_inner, 64
    with (
        torch.inference_mode(),
        reference_paths(),
        torch.autocast("cpu", dtype=torch.bfloat16),
        profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof,
    ):
        model(x)
    assert dtypes == [{torch.bfloat16}] * len(model.body)
    casts = [
        e
        for e in prof.events()
        if e.name in ("aten::to", "aten::_to_copy") and [1, inner, length] in e.input_shapes
    ]
    assert casts == []


needs_bf16 = pytest.mark.skipif(not _onednn_bf16(), reason="oneDNN has no bfloat16 kernels on this CPU")


@needs_bf16
@pytest.mark.parametrize("upscale", [2, 3, 4])
def test_bf16_autocast_runs_the_fast_path_with_bf16_products(
    upscale: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under CPU autocast to bf16 the fast path runs with its matrix products in bf16 (and only those),
    # returns float32, and is closer to fp32 than autocast's reference, which rounds every layer:
    # at most BF16_FACTOR times the reference's error (measured 0.03-0.06x).
    model = seeded(MMA(upscale=upscale, **SMALL))
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(upscale))
    operands: list[torch.dtype] = []
    original = mma_module._operand
    monkeypatch.setattr(mma_module, "_operand", lambda t: operands.append(original(t).dtype) or original(t))
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x)
        assert operands and set(operands) == {torch.bfloat16}
        with reference_paths():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                ref = model(x)
            fp32 = model(x)
        operands.clear()
        with torch.autocast("cpu", dtype=torch.float16):  # the fast path computes in float32 or bf16 only
            model(x)
        assert operands == []
        model(x)  # and in float32 outside autocast
    assert operands and set(operands) == {torch.float32}
    assert fast.dtype == torch.float32 and fast.shape == fp32.shape
    fast_err, ref_err = (fast - fp32).abs().max().item(), (ref.float() - fp32).abs().max().item()
    assert 0 < fast_err <= BF16_FACTOR * ref_err
