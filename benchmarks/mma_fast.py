"""MMA's fp32 CPU fast path against its reference (today's plain spelling), interleaved in one process.

Cells: ``mma-s`` x4 on a 128x128 input and MMA x2 (19.8M) on 64x64, batch 1, random weights, eval mode,
``torch.inference_mode()``. For each thread count the reference (under
:func:`sisr.models._fastpath.reference_paths`) and the fast path alternate, ``--reps`` calls each after
one warm-up; the table gives the medians and reference / fast. With ``--profile`` it also prints the
share of the forward by category (torch.profiler, 1 thread) for both paths.

Usage: ``python benchmarks/mma_fast.py [--reps N] [--threads 1,2] [--profile]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from sisr.analysis.profile import machine
from sisr.models._fastpath import reference_paths
from sisr.models.mma import MMA, VARIANTS

CELLS = {"mma-s x4, 128x128": ("mma-s", 4, 128), "MMA x2 (19.8M), 64x64": ("mma", 2, 64)}
CATEGORIES = {  # profiler op name (substring) -> category
    "convolution": "convolutions",
    "FusedScan": "scan",
    "copy_": "layout copies",
    "clone": "layout copies",
    "mm": "matrix products",
    "linear": "matrix products",
    "pixel_shuffle": "pixel shuffle",
}


def _model(preset: str, scale: int, side: int) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return MMA(**VARIANTS[preset], upscale=scale).eval(), torch.rand(1, 3, side, side)


def _split(model: torch.nn.Module, x: torch.Tensor, reference: bool) -> dict[str, float]:
    """Share of the forward's self CPU time per category."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        if reference:
            with reference_paths():
                model(x)
        else:
            model(x)
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = next((c for key, c in CATEGORIES.items() if key in event.key), "other")
        shares[name] += event.self_cpu_time_total
    total = sum(shares.values())
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    print("| cell | threads | reference (ms) | fast (ms) | reference / fast |")
    print("|---|---:|---:|---:|---:|")
    for label, (preset, scale, side) in CELLS.items():
        model, x = _model(preset, scale, side)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            times: dict[str, list[float]] = {"ref": [], "fast": []}
            with torch.inference_mode():
                for rep in range(args.reps + 1):
                    for key in ("ref", "fast"):
                        start = time.perf_counter()
                        if key == "ref":
                            with reference_paths():
                                model(x)
                        else:
                            model(x)
                        if rep:  # the first round is the warm-up
                            times[key].append(time.perf_counter() - start)
            ref, fast = (statistics.median(times[k]) * 1e3 for k in ("ref", "fast"))
            print(f"| {label} | {threads} | {ref:.0f} | {fast:.0f} | {ref / fast:.2f}x |", flush=True)
        if args.profile:
            torch.set_num_threads(1)
            for name, reference in (("reference", True), ("fast", False)):
                split = _split(model, x, reference)
                print(f"  {label}, {name}: " + ", ".join(f"{k} {v:.0%}" for k, v in split.items()))


if __name__ == "__main__":
    main()
