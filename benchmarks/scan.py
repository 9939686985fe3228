"""Benchmark of the selective-scan implementations on the CPU; prints a Markdown table.

Shapes are those of MMA's Mamba blocks: batch 1, d_inner 384, d_state 16, L = side² tokens, with delta
softplus, delta_bias, D and z. Rows: implementation x L; columns for the forward pass (no grad) and for
forward + backward.

- time: median of ``--reps`` calls after one warm-up call;
- speed-up: loop time / time. When the loop is not run at a size (``--loop-max``), the loop time is
  extrapolated linearly in L from the largest measured size and the speed-up is marked ``~``;
- peak extra memory: every cell runs in a fresh subprocess; the kernel's peak-RSS mark (VmHWM) is
  reset just before the first call, and the peak during that call minus the resident size before it
  is reported, i.e. all memory the call touched beyond its inputs (torch's allocator returns large
  blocks to the OS, so this is the peak of live tensors plus allocator overhead);
- error: max|a - b| / max|b| against the loop (for forward + backward the worst over the output and
  the gradients of u, delta, A, B, C, D, z, delta_bias). Where the loop is not run, the reference is
  the fused kernel in float64, marked ``*``.

Optionally, ``--official-ref FILE`` adds a row for the official reference loop, ``selective_scan_ref`` of
``mamba_ssm`` (as in Vim's ``mamba-1p1p1/mamba_ssm/ops/selective_scan_interface.py``), from a file you cut
from a copy of that code yourself (the function and its imports: ``torch``, ``torch.nn.functional as F``,
``einops.rearrange`` and ``repeat``); nothing of it is in this repository. That loop materialises the
(batch, d, L, n) decays and drives at once and reduces with ``einsum`` at every step; sisr's loop
discretises 256 positions at a time. Only its forward is timed: autograd through its per-position
``einsum`` steps takes minutes (144 s for forward + backward at 48² here). The summary lines after the
table give the fused kernel's speed-up over both loops.

Usage: ``python benchmarks/scan.py [--quick] [--official-ref FILE]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

# The private backends are what is measured here; sisr.ops.selective_scan picks one of them.
from sisr.ops import _chunked, _fused, fused_available, selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
BATCH, D_INNER, D_STATE = 1, 384, 16


def make_inputs(length: int, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    a_log = torch.log(torch.arange(1, D_STATE + 1.0)).repeat(D_INNER, 1) + 0.2 * randn(D_INNER, D_STATE)
    return {
        "u": randn(BATCH, D_INNER, length),
        "delta": randn(BATCH, D_INNER, length) - 2.0,
        "A": -torch.exp(a_log.to(dtype)),
        "B": randn(BATCH, D_STATE, length),
        "C": randn(BATCH, D_STATE, length),
        "D": randn(D_INNER),
        "z": randn(BATCH, D_INNER, length),
        "delta_bias": 0.5 * randn(D_INNER),
    }


def _mambapy() -> Callable[..., Tensor] | None:
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def scan(
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor,
        z: Tensor,
        delta_bias: Tensor,
        softplus: bool,
    ) -> Tensor:
        dt = torch.nn.functional.softplus(delta + delta_bias[:, None]) if softplus else delta
        # mambapy wants (batch, L, d, n) decays and drives.
        dA = torch.exp(dt.transpose(1, 2).unsqueeze(-1) * A)
        dBu = (dt * u).transpose(1, 2).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)
        h = pscan(dA, dBu)
        y = (h @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        return (y + u * D[:, None]) * torch.nn.functional.silu(z)

    return scan


def _official_ref(path: str) -> Callable[..., Tensor]:
    spec = importlib.util.spec_from_file_location("official_selective_scan_ref", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"scan.py: error: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.selective_scan_ref  # (u, delta, A, B, C, D, z, delta_bias, delta_softplus), as sisr's


def implementations(
    compile_chunked: bool, official_ref: str | None = None
) -> dict[str, Callable[..., Tensor]]:
    impls: dict[str, Callable[..., Tensor]] = {"loop": selective_scan_ref}
    if official_ref is not None:
        impls["official ref"] = _official_ref(official_ref)
    impls["chunked"] = _chunked.selective_scan
    if compile_chunked:
        impls["chunked+compile"] = torch.compile(_chunked.selective_scan)
    if fused_available():
        impls["fused"] = _fused.selective_scan
    pscan = _mambapy()
    if pscan is not None:
        impls["mambapy pscan"] = pscan
    return impls


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rel_err(a: Tensor, b: Tensor) -> float:
    scale = b.abs().max().item()
    err = (a.double() - b.double()).abs().max().item()
    return err / scale if scale > 0 else err


def call(fn: Callable[..., Tensor], x: dict[str, Tensor], backward: bool) -> list[Tensor]:
    """Output (and gradients) of one call; gradients of sum(out * w) with fixed w."""
    if not backward:
        with torch.no_grad():
            return [fn(*(x[k] for k in NAMES), True)]
    leaves = {k: v.detach().requires_grad_() for k, v in x.items()}
    out = fn(*(leaves[k] for k in NAMES), True)
    # Drawn in float32 whatever the dtype: a float64 draw gives other numbers, and the float64 reference
    # would then differentiate another function.
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    out.backward(w)
    return [out.detach(), *(leaves[k].grad for k in NAMES)]


def run_cell(
    impl: str,
    length: int,
    backward: bool,
    reps: int,
    ref_path: str | None,
    compile_: bool,
    official: str | None,
) -> dict:
    """One measurement, in this (fresh) process."""
    fn = implementations(compile_, official)[impl]
    x = make_inputs(length)
    reset_peak_rss()
    before = rss_bytes()
    results = call(fn, x, backward)
    peak = peak_rss_bytes()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call(fn, x, backward)
        times.append(time.perf_counter() - t0)
    cell = {"time": statistics.median(times), "mem": max(0, peak - before)}
    if ref_path is not None:
        ref = torch.load(ref_path)
        cell["err"] = max(rel_err(a, b) for a, b in zip(results, ref, strict=True))
    return cell


def make_reference(length: int, backward: bool, use_loop: bool, path: str) -> None:
    """Reference outputs: the loop in float32, or (where the loop is skipped) the fused kernel in float64."""
    if use_loop:
        results = call(selective_scan_ref, make_inputs(length), backward)
    else:
        results = call(_fused.selective_scan, make_inputs(length, torch.float64), backward)
    torch.save([r.float() for r in results], path)


def subprocess_json(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, env=os.environ
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kernel = _fused._kernel()
    kernel_name = kernel.__name__ if kernel is not None else "not built"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"- CPU: {model}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, ATen capability {torch.backends.cpu.get_cpu_capability()})\n"
        f"- fused kernel module: {kernel_name}; load average before the run: {load}"
    )


def fmt_time(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 10 else f"{t:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="L in {48², 64²}, fewer repetitions")
    parser.add_argument("--sides", type=int, nargs="+", help="image sides (L = side²); default 48 64 128 256")
    parser.add_argument("--loop-max", type=int, default=128, help="largest side at which the loop runs")
    parser.add_argument("--reps", type=int, help="timed calls per cell (default 5, quick 3; loop 1-3)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(chunked)")
    parser.add_argument("--official-ref", metavar="FILE", help="file defining mamba_ssm's selective_scan_ref")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: impl,length,backward,reps,ref
    args = parser.parse_args()

    if args.cell:
        impl, length, backward, reps, ref = args.cell.split(",")
        cell = run_cell(
            impl, int(length), backward == "1", int(reps), ref or None, args.compile, args.official_ref
        )
        print(json.dumps(cell))
        return

    sides = args.sides or ([48, 64] if args.quick else [48, 64, 128, 256])
    reps = args.reps or (3 if args.quick else 5)
    impls = list(implementations(args.compile, args.official_ref))
    extra = (["--compile"] if args.compile else []) + (
        ["--official-ref", args.official_ref] if args.official_ref else []
    )
    print("# Selective scan on the CPU\n")
    print(machine())
    print(f"- batch {BATCH}, d_inner {D_INNER}, d_state {D_STATE}, softplus + delta_bias + D + z\n")
    print("| implementation | L | fwd | speed-up | peak extra mem | max rel err | fwd+bwd | speed-up "
          "| peak extra mem | max rel err |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    loop_time: dict[bool, tuple[int, float]] = {}  # backward -> (largest measured L, time)
    measured: dict[tuple[str, int, bool], float] = {}  # (impl, L, backward) -> time
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            length = side * side
            use_loop = side <= args.loop_max
            refs = {}
            for backward in (False, True):
                path = f"{tmp}/ref_{length}_{int(backward)}.pt"
                if use_loop or "fused" in impls:
                    make_reference(length, backward, use_loop, path)
                    refs[backward] = path
            for impl in impls:
                if impl in ("loop", "official ref") and not use_loop:
                    continue
                cols = []
                for backward in (False, True):
                    if impl == "official ref" and backward:
                        # Autograd through its L einsum steps takes minutes (144 s at 48²).
                        cols += ["not run", "", "", ""]
                        continue
                    n = max(1, min(reps, 3)) if impl in ("loop", "official ref") else reps
                    cell = subprocess_json(
                        ["--cell", f"{impl},{length},{int(backward)},{n},{refs.get(backward, '')}", *extra]
                    )
                    if "error" in cell:
                        cols += [f"failed: {cell['error'][:40]}", "", "", ""]
                        continue
                    measured[impl, length, backward] = cell["time"]
                    if impl == "loop":
                        loop_time[backward] = (length, cell["time"])
                    base_len, base = loop_time.get(backward, (0, float("nan")))
                    extrapolated = base_len != length
                    if base_len:
                        loop_at_l = base * length / base_len
                        speedup = f"{'~' if extrapolated else ''}{loop_at_l / cell['time']:.1f}×"
                    else:  # the loop ran at no size of this run: nothing to compare with
                        speedup = "n/a"
                    err = f"{cell['err']:.1e}{'*' if not use_loop else ''}" if "err" in cell else "n/a"
                    cols += [fmt_time(cell["time"]), speedup, f"{cell['mem'] / 2**20:.0f} MB", err]
                print(f"| {impl} | {side}² | " + " | ".join(cols) + " |", flush=True)
    print("\n`~`: speed-up against the loop time extrapolated linearly in L; `*`: error against the fused")
    print("kernel in float64 (the loop was not run at that size).")
    print()
    for (impl, length, backward), t in measured.items():
        if impl not in ("loop", "official ref") or ("fused", length, backward) not in measured:
            continue
        side = round(length**0.5)
        pass_ = "fwd+bwd" if backward else "fwd"
        speedup = t / measured["fused", length, backward]
        print(f"- fused vs {impl} at {side}², {pass_}: {speedup:.1f}x")


if __name__ == "__main__":
    main()
