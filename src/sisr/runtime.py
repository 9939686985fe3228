"""Process-wide settings for fast PyTorch on the CPU: how freed memory is reused.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB at first, adapting up to
32 MiB) with a fresh ``mmap`` and gives it back to the kernel with ``munmap`` when it is freed. A
super-resolution network allocates and frees activations of megabytes at every layer: a SeemoRe-T
feature map of a 256x256 image is 9 MB, of a batch of 8 75 MB. Each of them is then mapped anew, and
the kernel zero-fills every 4 KiB page on first touch, which costs about as much as the convolution
that writes it. :func:`reuse_freed_memory` keeps freed memory in the process for the next tensor
instead, which makes eval and training of both networks markedly faster, batches most of all
(``benchmarks/latency.py`` measures it: its rows marked "glibc's default malloc" show the
difference). The price is that the process does not hand memory back to the system until it
exits, which suits a command that upscales, evaluates or trains and then ends.

This is what PyTorch's CPU performance guide gets by preloading jemalloc or tcmalloc, done with the
C library the process already has. The ``sisr`` command calls it at start; a Python program calls it
once itself. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["reuse_freed_memory"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def reuse_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse rather than unmapping it.

    Sets ``M_MMAP_MAX`` to 0 (large blocks come from the heap, which is reused) and
    ``M_TRIM_THRESHOLD`` to its maximum (freed memory is not given back to the kernel). It lasts for
    the life of the process and affects only allocations made after the call. Calling it again is
    harmless.

    Returns:
        True if glibc accepted both settings; False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
