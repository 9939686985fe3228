"""One switch for the networks' fast inference paths.

A fast path (a fused CPU kernel, another memory layout) sits beside the plain PyTorch spelling it replaces,
its reference, and runs only where :func:`fast_path_allowed` says so: float32 CPU inference with autograd
off, outside ONNX export and autocast. Everywhere else (training, LAM's input gradients, CUDA, the meta
device of ``sisr profile``, export) the reference runs, so that those keep their exact semantics.
:func:`reference_paths` forces the reference for a block of code: tests compare the two with it, and the
benchmarks time the reference as "plain PyTorch".
"""

from __future__ import annotations

import contextlib
import contextvars
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


def fast_path_allowed(x: Tensor) -> bool:
    """Whether a fast CPU inference path may replace its reference for input `x`."""
    return (
        not _REFERENCE.get()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.onnx.is_in_onnx_export()
        and not torch.jit.is_tracing()
    )
