"""Mamba's short convolution (``sisr.ops.conv1d_silu``, the compiled kernel) against its reference.

Relative error is ``max|a - b| / max|b|``; the kernel's SiLU uses its own exp (a few ulp), so float32
agrees to 1e-6 and float64 to 1e-12.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from sisr.ops import _fused, conv1d_silu, conv1d_silu_ref, fused_available

needs_kernel = pytest.mark.skipif(
    not fused_available(), reason="compiled kernel sisr.ops._scan_cpu* not built"
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_reference_is_vims_conv_in_both_directions() -> None:
    # Forward: nn.Conv1d with padding K-1, first L kept. Backward: Vim's conv1d_b on the flipped sequence,
    # flipped back, is the anti-causal conv with the reversed kernel on the sequence as it is.
    torch.manual_seed(0)
    d, k, length = 6, 4, 11
    conv = torch.nn.Conv1d(d, d, k, groups=d, padding=k - 1)
    x = torch.randn(2, d, length)
    assert torch.equal(conv1d_silu_ref(x, conv.weight, conv.bias), F.silu(conv(x)[..., :length]))
    vim_backward = F.silu(conv(x.flip(-1))[..., :length]).flip(-1)
    anticausal = conv1d_silu_ref(x, conv.weight.flip(-1), conv.bias, anticausal=True)
    torch.testing.assert_close(anticausal, vim_backward)


@needs_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("anticausal", [False, True])
@pytest.mark.parametrize("k", [1, 2, 4, 5])
@pytest.mark.parametrize("length", [1, 3, 8, 37, 300])
def test_kernel_matches_reference(
    dtype: torch.dtype, tol: float, anticausal: bool, k: int, length: int
) -> None:
    torch.manual_seed(length * 10 + k)
    d = 7
    x = 3 * torch.randn(2, d, length, dtype=dtype)  # SiLU's both tails, with |pre-activation| up to ~20
    weight, bias = torch.randn(d, 1, k, dtype=dtype), torch.randn(d, dtype=dtype)
    ref = conv1d_silu_ref(x, weight, bias, anticausal=anticausal)
    out = _fused._kernel().conv1d_silu(x, weight, bias, anticausal)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < tol
    without_bias = _fused._kernel().conv1d_silu(x, weight, None, anticausal)
    assert rel_err(without_bias, conv1d_silu_ref(x, weight, None, anticausal=anticausal)) < tol


@needs_kernel
def test_dispatch_takes_the_kernel_outside_autograd_and_the_reference_inside(
    kernel_calls: Callable[[str], list[str]],
) -> None:
    torch.manual_seed(1)
    x, weight, bias = torch.randn(1, 4, 20), torch.randn(4, 1, 4), torch.randn(4)
    calls = kernel_calls("conv1d_silu")
    with torch.inference_mode():
        fast = conv1d_silu(x, weight, bias)
    assert calls == ["conv1d_silu"]
    # Gradients: the kernel has no backward, so a differentiable call runs the reference.
    w = weight.clone().requires_grad_()
    out = conv1d_silu(x, w, bias, anticausal=True)
    out.sum().backward()
    assert calls == ["conv1d_silu"] and w.grad is not None
    assert rel_err(fast, conv1d_silu_ref(x, weight, bias)) < 1e-6
