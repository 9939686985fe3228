"""One switch for the networks' fast inference paths.

A fast path (a fused CPU kernel, another memory layout) sits beside the plain PyTorch spelling it replaces,
its reference, and runs only where :func:`fast_path_allowed` says so: float32 CPU inference with autograd off,
outside ONNX export and autocast. :func:`fast_path_dtype` also admits bfloat16 for the paths that compute in
it (SeemoRe's, and MMA's matrix products): a bfloat16 input, or a float32 one under CPU autocast to bfloat16,
on a CPU where oneDNN computes in bfloat16. Everywhere else (training, LAM's input gradients, CUDA, the meta
device of ``sisr profile``, export) the reference runs, so that those keep their exact semantics.
:func:`reference_paths` forces the reference for a block of code: tests compare the two with it, and the
benchmarks time the reference as "plain PyTorch".
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import torch
from torch import Tensor

_REFERENCE = contextvars.ContextVar("sisr_reference_paths", default=False)


@contextlib.contextmanager
def reference_paths() -> Iterator[None]:
    """Within this block every network runs its reference path."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def fast_path_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype a fast CPU inference path computes in for input `x`, or None where the reference runs.

    float32 for a float32 input outside autocast. bfloat16 for a bfloat16 input outside autocast, and for
    a float32 or bfloat16 input under CPU autocast to bfloat16 (the path then turns autocast off and casts
    the weights itself, as autocast would), where oneDNN has bfloat16 kernels on this CPU.
    """
    if (
        _REFERENCE.get()
        or x.device.type != "cpu"
        or torch.is_grad_enabled()
        or torch.onnx.is_in_onnx_export()
        or torch.jit.is_tracing()
    ):
        return None
    if torch.is_autocast_enabled("cpu"):
        wanted = torch.get_autocast_dtype("cpu")
        if wanted != torch.bfloat16 or x.dtype not in (torch.float32, torch.bfloat16):
            return None
    else:
        wanted = x.dtype
    if wanted == torch.float32:
        return wanted
    return wanted if wanted == torch.bfloat16 and _onednn_bf16() else None


@functools.cache
def _onednn_bf16() -> bool:
    # oneDNN's own check: bfloat16 kernels need AVX-512 (emulated without AVX512-BF16) or AMX.
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fast_path_allowed(x: Tensor) -> bool:
    """Whether a float32 fast CPU inference path may replace its reference for input `x`."""
    return fast_path_dtype(x) == torch.float32
