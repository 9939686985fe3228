"""The short-row layer norm (``sisr.ops.layer_norm_rows``, the compiled kernel) against its reference.

The kernel computes in float32 with two passes (mean, then the variance of the centred values), as
ATen's does up to the order of the sums, so float32 agrees to 1e-5 relative to the output's largest
value. For bfloat16 input both compute in float32 and round once; they differ by at most one bfloat16
rounding of the output (2^-7 of the largest value).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sisr.ops import _fused, fused_available, layer_norm_rows, layer_norm_rows_ref

needs_kernel = pytest.mark.skipif(
    not fused_available(), reason="compiled kernel sisr.ops._scan_cpu* not built"
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@needs_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2**-7)])
@pytest.mark.parametrize(
    "shape", [(1, 1), (3, 1), (5, 7), (2, 4, 4, 16), (1, 17, 23, 36), (2, 3, 5, 48), (7, 33)]
)
def test_kernel_matches_reference(dtype: torch.dtype, tol: float, shape: tuple[int, ...]) -> None:
    # Rows below, at and off the vector length (the scalar tail), a single element, SeemoRe's widths.
    torch.manual_seed(sum(shape))
    c = shape[-1]
    x = (3 + 2 * torch.randn(shape)).to(dtype)  # an offset, so that the mean matters
    weight, bias = torch.randn(c), torch.randn(c)
    out = _fused._kernel().layer_norm_rows(x, weight, bias, 1e-6)
    ref = layer_norm_rows_ref(x, weight, bias, 1e-6)
    assert out.dtype == dtype and out.shape == x.shape
    assert rel_err(out, ref) <= tol
    assert torch.isfinite(out).all()


@needs_kernel
def test_constant_rows_give_the_bias() -> None:
    # Zero variance: (x - mean) is exactly 0, so every output is the bias, as the reference's.
    x = torch.full((4, 36), 2.5)
    weight, bias = torch.randn(36), torch.randn(36)
    out = _fused._kernel().layer_norm_rows(x, weight, bias, 1e-6)
    assert torch.equal(out, bias.expand(4, 36))
    assert torch.equal(out, layer_norm_rows_ref(x, weight, bias, 1e-6))


@needs_kernel
def test_dispatch_takes_the_kernel_outside_autograd_and_the_reference_elsewhere(
    kernel_calls: Callable[[str], list[str]],
) -> None:
    torch.manual_seed(3)
    x, weight, bias = torch.randn(2, 5, 36), torch.randn(36), torch.randn(36)
    calls = kernel_calls("layer_norm_rows")
    with torch.inference_mode():
        fast = layer_norm_rows(x, weight, bias, 1e-6)
    assert calls == ["layer_norm_rows"]
    assert rel_err(fast, layer_norm_rows_ref(x, weight, bias, 1e-6)) <= 1e-5
    # No backward in the kernel: a differentiable call runs the reference; so do a non-contiguous
    # input, float64, and a weight of another length.
    w = weight.clone().requires_grad_()
    layer_norm_rows(x, w, bias, 1e-6).sum().backward()
    assert w.grad is not None
    with torch.inference_mode():
        layer_norm_rows(x.transpose(0, 1), weight, bias, 1e-6)
        layer_norm_rows(x.double(), weight.double(), bias.double(), 1e-6)
        with pytest.raises(RuntimeError):  # the reference's own error
            layer_norm_rows(x, weight[:5], bias[:5], 1e-6)
    assert calls == ["layer_norm_rows"]
