"""The gated-dconv FFN's gate (``sisr.ops.gated_dwconv3x3``, the compiled kernel) against its reference.

Relative error is ``max|a - b| / max|b|``. The kernel's float GELU is Abramowitz & Stegun's erf (as
ATen's vectorised one) with the kernel's own exp, so float32 agrees to 1e-6 and float64 (ATen's erf)
to 1e-12.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from sisr.ops import _fused, fused_available, gated_dwconv3x3, gated_dwconv3x3_ref

needs_kernel = pytest.mark.skipif(
    not fused_available(), reason="compiled kernel sisr.ops._scan_cpu* not built"
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_reference_is_restormers_gate() -> None:
    # Restormer's GDFN: one depthwise conv over both halves, chunk, gelu(x1) * x2; the reference is the
    # same as two depthwise convs, one per half.
    torch.manual_seed(0)
    c = 5
    conv = torch.nn.Conv2d(2 * c, 2 * c, 3, 1, 1, groups=2 * c)
    x = torch.randn(2, 2 * c, 6, 7)
    x1, x2 = conv(x).chunk(2, dim=1)
    torch.testing.assert_close(gated_dwconv3x3_ref(x, conv.weight, conv.bias), F.gelu(x1) * x2)
    w, b = conv.weight, conv.bias
    halves = [F.conv2d(x[:, s], w[s], b[s], padding=1, groups=c) for s in (slice(0, c), slice(c, 2 * c))]
    torch.testing.assert_close(gated_dwconv3x3_ref(x, w, b), F.gelu(halves[0]) * halves[1])


@needs_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 1), (2, 3, 1, 9), (1, 4, 9, 1), (2, 6, 5, 7), (1, 3, 8, 8), (1, 2, 3, 17), (1, 33, 12, 40)],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_kernel_matches_reference(dtype: torch.dtype, tol: float, shape: tuple, with_bias: bool) -> None:
    # Widths below, at and off the vector length (the scalar tail), single rows and columns (every tap
    # at the zero border), batches.
    batch, c, h, w = shape
    torch.manual_seed(c * 100 + h * 10 + w)
    x = 2 * torch.randn(batch, 2 * c, h, w, dtype=dtype)  # GELU's both tails
    weight = torch.randn(2 * c, 1, 3, 3, dtype=dtype)
    bias = torch.randn(2 * c, dtype=dtype) if with_bias else None
    ref = gated_dwconv3x3_ref(x, weight, bias)
    out = _fused._kernel().gated_dwconv3x3(x, weight, bias, None)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < tol
    # project_in's bias, added inside the zero padding (not a constant shift of the output at the border).
    input_bias = torch.randn(2 * c, dtype=dtype)
    shifted = gated_dwconv3x3_ref(x, weight, bias, input_bias=input_bias)
    torch.testing.assert_close(shifted, gated_dwconv3x3_ref(x + input_bias[:, None, None], weight, bias))
    assert rel_err(_fused._kernel().gated_dwconv3x3(x, weight, bias, input_bias), shifted) < tol


@needs_kernel
def test_kernel_gelu_is_within_float_rounding_of_the_exact_one() -> None:
    # With the gate half's kernel a centre tap of 1 and the other half a constant 1 (bias only), the
    # kernel computes gelu(x) itself; compare it with GELU in float64 over both tails.
    x = torch.linspace(-12, 12, 4001).view(1, 1, 1, -1)
    weight = torch.zeros(2, 1, 3, 3)
    weight[0, 0, 1, 1] = 1
    bias = torch.tensor([0.0, 1.0])
    out = _fused._kernel().gated_dwconv3x3(torch.cat([x, x]).view(1, 2, 1, -1), weight, bias, None)
    exact = F.gelu(x.double())
    assert (out.double() - exact).abs().max().item() < 1e-6


@needs_kernel
def test_kernel_reads_any_layout() -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 8, 6, 10).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 1, 3, 3), torch.randn(8)
    out = _fused._kernel().gated_dwconv3x3(x, weight, bias, None)
    assert rel_err(out, gated_dwconv3x3_ref(x, weight, bias)) < 1e-6


@needs_kernel
def test_dispatch_takes_the_kernel_outside_autograd_and_the_reference_inside(
    kernel_calls: Callable[[str], list[str]],
) -> None:
    torch.manual_seed(1)
    x, weight, bias = torch.randn(1, 6, 5, 5), torch.randn(6, 1, 3, 3), torch.randn(6)
    calls = kernel_calls("gated_dwconv3x3")
    with torch.inference_mode():
        fast = gated_dwconv3x3(x, weight, bias)
    assert calls == ["gated_dwconv3x3"]
    # The kernel has no backward, so a differentiable call runs the reference.
    w = weight.clone().requires_grad_()
    gated_dwconv3x3(x, w, bias).sum().backward()
    shift = torch.randn(6, requires_grad=True)
    gated_dwconv3x3(x, weight, bias, input_bias=shift).sum().backward()
    assert calls == ["gated_dwconv3x3"] and w.grad is not None and shift.grad is not None
    assert rel_err(fast, gated_dwconv3x3_ref(x, weight, bias)) < 1e-6
    # Shapes the kernel does not take (an odd channel count, a 5x5 kernel) go to the reference too.
    odd = torch.randn(1, 5, 4, 4)
    with torch.inference_mode():
        gated_dwconv3x3(torch.randn(1, 6, 4, 4), torch.randn(6, 1, 5, 5), None)
        with pytest.raises(RuntimeError):  # the reference's own error for an odd count
            gated_dwconv3x3(odd, torch.randn(5, 1, 3, 3), None)
    assert calls == ["gated_dwconv3x3"]
