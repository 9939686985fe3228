"""Process-wide settings and the choice of device.

:func:`configure_threads` sets the CPU thread settings of the ``sisr`` command before torch is imported.

:func:`resolve_device` turns a device name (``--device``, ``device=``) into a ``torch.device`` that
this machine has, or a one-line :class:`~sisr.errors.SisrError`; every command and workflow uses it.

:func:`reuse_freed_memory` sets how freed memory is reused, for fast PyTorch on the CPU.

:func:`cpu_info` reads this CPU's name, family, model and instruction-set flags once, for the bf16 check
of :mod:`sisr.precision` and the machine line of every benchmark table; :func:`hardware` names what a
training run ran on, for its checkpoints.

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
import functools
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sisr.errors import SisrError

if TYPE_CHECKING:  # torch is imported when a device is resolved, so that `sisr --help` stays fast
    import torch

__all__ = [
    "DEFAULT_WAIT_POLICY",
    "CpuInfo",
    "World",
    "configure_threads",
    "cpu_info",
    "hardware",
    "init_distributed",
    "parse_cpuinfo",
    "resolve_device",
    "reuse_freed_memory",
]

_DEVICE_NAMES = "cpu, cuda, cuda:N or mps"
# What OpenMP threads do while they wait for work: PASSIVE sleeps, where GOMP's default spins for a while
# first. Spinning threads take the cores that other processes (or this one's other threads) need, and on
# a shared machine several threads then run far slower than one (benchmarks/threads.py, README "Threads").
DEFAULT_WAIT_POLICY = "PASSIVE"


def configure_threads(threads: int | None = None) -> dict[str, str]:
    """The ``sisr`` command's CPU thread settings; call it before torch is imported.

    ``OMP_WAIT_POLICY`` becomes :data:`DEFAULT_WAIT_POLICY` unless the environment sets it (OpenMP reads
    it once, when torch loads it). `threads` sets ``OMP_NUM_THREADS`` (and, if torch is already
    imported, ``torch.set_num_threads``); None keeps ``OMP_NUM_THREADS`` as the user set it, or torch's
    default, one thread per core.

    Args:
        threads: Threads for the CPU's parallel operations, at least 1; None: as above.

    Returns:
        The environment variables this call set, name -> value.

    Raises:
        SisrError: `threads` below 1.
    """
    if threads is not None and threads < 1:
        raise SisrError(f"--threads must be at least 1, got {threads}")
    changed: dict[str, str] = {}
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        changed["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
    if threads is not None:
        changed["OMP_NUM_THREADS"] = str(threads)
    os.environ.update(changed)
    if threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return changed


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says of this CPU (empty fields where there is no such file)."""

    name: str
    family: str
    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """Whether the flags say the CPU does bf16 arithmetic natively (AVX512-BF16 or AMX)."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    def describe(self) -> str:
        """The CPU for a benchmark table, e.g. ``AMD EPYC (family 25 model 17; AVX-512, native bf16)``."""
        features = []
        if "avx512f" in self.flags:
            features.append("AVX-512")
        elif "avx2" in self.flags:
            features.append("AVX2, no AVX-512")
        if self.native_bf16:
            features.append("native bf16" + (" (AMX)" if "amx_bf16" in self.flags else ""))
        elif self.flags:
            features.append("no native bf16")
        ident = f"family {self.family} model {self.model}" if self.family else ""
        details = "; ".join(d for d in (ident, ", ".join(features)) if d)
        return f"{self.name} ({details})" if details else self.name


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's entry of a ``/proc/cpuinfo`` text (every core of a machine is alike)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor's entry
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CpuInfo(
        name=fields.get("model name", ""),
        family=fields.get("cpu family", ""),
        model=fields.get("model", ""),
        flags=frozenset(fields.get("flags", "").split()),
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU, read from ``/proc/cpuinfo`` once; off Linux, the name ``platform`` gives."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = CpuInfo(name="", family="", model="", flags=frozenset())
    if not info.name:
        import platform

        info = CpuInfo(platform.processor() or "unknown CPU", info.family, info.model, info.flags)
    return info


def resolve_device(device: str | torch.device | None = None, *, local_rank: int = 0) -> torch.device:
    """Parses a device name and checks that this machine has that device.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``; None picks
            ``cuda:<local_rank>`` when CUDA is available, else the CPU.
        local_rank: This process's GPU under ``torchrun`` (``LOCAL_RANK``), used when ``device`` is None.

    Returns:
        The device.

    Raises:
        SisrError: The name is not a device (``gpu``, ``cuda:x``), not a kind sisr runs on, or names a
            device this machine lacks (CUDA without a GPU, ``cuda:7`` on a 1-GPU machine, MPS off macOS).
    """
    import torch

    if device is None:
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SisrError(f"unknown device {str(device)!r} (use {_DEVICE_NAMES})") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise SisrError(f"unsupported device {str(device)!r} (use {_DEVICE_NAMES})")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SisrError(f"device {str(device)!r} requested, but this machine has no usable CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise SisrError(
            f"device {str(device)!r} requested, but this machine has {count} CUDA device"
            + ("s" if count != 1 else "")
            + f" (cuda:0 to cuda:{count - 1})"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SisrError(f"device {str(device)!r} requested, but MPS is not available on this machine")
    return dev


def hardware(device: torch.device) -> dict[str, str]:
    """What a run on ``device`` ran on, for the metadata of its checkpoints and shipped files.

    Args:
        device: The device the run computes on.

    Returns:
        ``device`` (its type: ``cpu``, ``cuda`` or ``mps``), ``name`` (the GPU's name, e.g.
        ``NVIDIA H200``, or :meth:`CpuInfo.describe` of this CPU), ``cpu`` (this CPU, which runs the data
        loaders in any case) and ``torch`` (its version).
    """
    import torch

    cpu = cpu_info().describe()
    name = cpu
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple MPS"
    return {"device": device.type, "name": name, "cpu": cpu, "torch": str(torch.__version__)}


@dataclass(frozen=True)
class World:
    """This process's place among the processes that ``torchrun`` started (one process: rank 0 of 1)."""

    rank: int
    world_size: int
    local_rank: int  # the process's number on its node: its GPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(*, backend: Literal["gloo", "nccl"] | None = None) -> World:
    """Joins the process group that ``torchrun``'s environment describes (``WORLD_SIZE`` > 1).

    Without those variables (or with one process) no process group is created. With ``nccl`` the
    process's CUDA device becomes ``cuda:LOCAL_RANK``.

    Args:
        backend: ``gloo`` (CPU tensors) or ``nccl`` (CUDA tensors); None picks NCCL when CUDA is
            available, else Gloo.

    Returns:
        The process's rank, the number of processes and its local rank.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World(0, 1, 0)
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return World(rank, world_size, local_rank)


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
