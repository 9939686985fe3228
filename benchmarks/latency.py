"""Latency and peak memory of the networks on this machine (the README's latency table).

Every cell runs in a fresh subprocess, so that its peak memory is its own: "peak extra memory" is the
process's peak resident set size (``ru_maxrss``) at the end minus its resident size just before the
first forward pass (weights and Python already loaded). Times are the median of ``--repeat`` runs after
one warm-up run, in eval mode under ``torch.inference_mode()`` (training-step rows: forward, L1 loss,
backward and an Adam step, in train mode).

Rows:

- MMA (the paper's 19.8M ×2 network, and the ``mma-s`` preset ×4) on a 256×256 LR input, and ×2 on 64×64;
- SeemoRe T/B/L ×4 on a 256×256 LR input, batch 1 and batch 8, and batch 8 run as 8 single images;
- SeemoRe-T's batch-8 and training-step rows again with glibc's default malloc, which maps every large
  block afresh (see :mod:`sisr.runtime`); every other sisr row runs with
  ``sisr.runtime.reuse_freed_memory()``, as the ``sisr`` command does;
- optionally the official networks, from a copy of the official code you prepared yourself (nothing of
  it is in this repository): ``--official-mma DIR`` where ``DIR`` makes ``basicsr.archs.mma_arch``
  importable with ``mamba_ssm``'s CUDA ops replaced by their CPU reference (see tests/fixtures/README.md),
  and ``--official-seemore FILE``, a copy of ``basicsr/archs/seemore_arch.py`` without the registry
  import. Rows that need them are skipped without them.

Usage: python benchmarks/latency.py [--quick] [--official-mma DIR] [--official-seemore FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

from sisr.analysis.profile import machine
from sisr.cli.argtypes import positive_int
from sisr.models import PRESETS, create_model
from sisr.runtime import reuse_freed_memory

Cell = tuple[str, str, int, int, int, str]  # (description, builder key, scale, LR size, batch, mode)
# Cells that run a second time with glibc's default malloc ("<name>-glibc"), to show what
# sisr.runtime.reuse_freed_memory() buys.
GLIBC_TWINS = ("seemore-t-x4-256-b8", "seemore-t-x4-256-8x1", "seemore-t-x4-train")


def _with_glibc_twins(cells: dict[str, Cell]) -> dict[str, Cell]:
    """``cells`` with each of GLIBC_TWINS followed by its glibc-malloc twin."""
    out: dict[str, Cell] = {}
    for name, cell in cells.items():
        out[name] = cell
        if name in GLIBC_TWINS:
            out[f"{name}-glibc"] = (f"{cell[0]}, glibc's default malloc", *cell[1:])
    return out


# Every cell runs with sisr.runtime.reuse_freed_memory(), as the sisr command does, except those in
# GLIBC_MALLOC.
CELLS: dict[str, Cell] = _with_glibc_twins(
    {
        "mma-x2-64": ("MMA x2 (19.8M), 64x64", "mma", 2, 64, 1, "eval"),
        "official-mma-x2-64": ("official MMA x2, reference scan, 64x64", "official-mma", 2, 64, 1, "eval"),
        "mma-x2-256": ("MMA x2 (19.8M), 256x256", "mma", 2, 256, 1, "eval"),
        "mma-small-x4-256": ("mma-s x4 (num_feat 48, 6 blocks), 256x256", "mma-s", 4, 256, 1, "eval"),
        "seemore-t-x4-256": ("SeemoRe-T x4, 256x256", "seemore-t", 4, 256, 1, "eval"),
        "seemore-b-x4-256": ("SeemoRe-B x4, 256x256", "seemore-b", 4, 256, 1, "eval"),
        "seemore-l-x4-256": ("SeemoRe-L x4, 256x256", "seemore-l", 4, 256, 1, "eval"),
        "seemore-t-x4-256-b8": ("SeemoRe-T x4, 256x256, batch 8", "seemore-t", 4, 256, 8, "eval"),
        "seemore-t-x4-256-8x1": (
            "SeemoRe-T x4, 256x256, 8 images one by one",
            "seemore-t",
            4,
            256,
            8,
            "serial",
        ),
        "seemore-b-x4-256-b8": ("SeemoRe-B x4, 256x256, batch 8", "seemore-b", 4, 256, 8, "eval"),
        "seemore-l-x4-256-b8": ("SeemoRe-L x4, 256x256, batch 8", "seemore-l", 4, 256, 8, "eval"),
        "seemore-t-x4-train": ("SeemoRe-T x4 training step, 8x64x64", "seemore-t", 4, 64, 8, "train"),
        "official-seemore-t-x4-train": (
            "official SeemoRe-T x4 training step, 8x64x64",
            "official-seemore-t",
            4,
            64,
            8,
            "train",
        ),
    }
)
# The official code runs as its own scripts do, with the C library's allocator left as it is.
GLIBC_MALLOC = frozenset(
    {"official-mma-x2-64", "official-seemore-t-x4-train", *(f"{name}-glibc" for name in GLIBC_TWINS)}
)
QUICK = ("mma-x2-64", "official-mma-x2-64", "seemore-t-x4-256", "seemore-t-x4-256-b8", "seemore-t-x4-256-8x1")


def _import_file(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(key: str, scale: int, args: argparse.Namespace) -> nn.Module:
    if key == "official-mma":
        sys.path.insert(0, args.official_mma)
        from basicsr.archs.mma_arch import MMA  # type: ignore[import-not-found]

        return MMA(3, 3, upscale=scale, **PRESETS["mma"][1])
    if key == "official-seemore-t":
        official = _import_file("official_seemore", args.official_seemore)
        return official.SeemoRe(scale=scale, **PRESETS["seemore-t"][1])
    return create_model(key, scale)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_cell(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Runs one cell in this process and returns its median time (ms) and peak extra memory (MB)."""
    _, key, scale, size, batch, mode = CELLS[name]
    if name not in GLIBC_MALLOC:
        reuse_freed_memory()
    torch.manual_seed(0)
    model = _build(key, scale, args)
    x = torch.rand(batch, 3, size, size)
    if mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        target = torch.rand(batch, 3, size * scale, size * scale)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = (model(x) - target).abs().mean()
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                if mode == "serial":
                    for i in range(batch):
                        model(x[i : i + 1])
                else:
                    model(x)

    base = _rss_mb()
    times = []
    for _ in range(1 + args.repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"ms": 1000 * statistics.median(times[1:]), "peak_mb": max(peak - base, 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the fast rows")
    parser.add_argument(
        "--repeat", type=positive_int, default=3, help="timed runs per cell after one warm-up"
    )
    parser.add_argument(
        "--official-mma", metavar="DIR", help="folder making basicsr.archs.mma_arch importable"
    )
    parser.add_argument("--official-seemore", metavar="FILE", help="copy of the official seemore_arch.py")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell, print JSON
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(args.cell, args)))
        return

    names = QUICK if args.quick else tuple(CELLS)
    print(f"Machine: {machine()}\n")
    print("| network | time | peak extra memory |")
    print("|---|---:|---:|")
    results: dict[str, dict[str, float]] = {}
    for name in names:
        label, key = CELLS[name][0], CELLS[name][1]
        if key == "official-mma" and not args.official_mma:
            continue
        if key.startswith("official-seemore") and not args.official_seemore:
            continue
        cmd = [sys.executable, __file__, "--cell", name, "--repeat", str(args.repeat)]
        if args.official_mma:
            cmd += ["--official-mma", args.official_mma]
        if args.official_seemore:
            cmd += ["--official-seemore", args.official_seemore]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {label} | failed: {done.stderr.strip().splitlines()[-1:]} | |")
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"| {label} | {r['ms']:,.0f} ms | {r['peak_mb']:,.0f} MB |", flush=True)

    print()
    # (label, slower cell, faster cell, target speed-up or None)
    ratios: list[tuple[str, str, str, float | None]] = [
        ("MMA x2 64x64, official with reference scan / sisr", "official-mma-x2-64", "mma-x2-64", 10.0),
        ("SeemoRe-T x4 batch 8: one by one / batched", "seemore-t-x4-256-8x1", "seemore-t-x4-256-b8", 2.0),
        (
            "SeemoRe-T x4 training step: official / sisr",
            "official-seemore-t-x4-train",
            "seemore-t-x4-train",
            1.0,
        ),
    ]
    ratios += [(f"{CELLS[n][0]}: glibc's malloc / reused memory", f"{n}-glibc", n, None) for n in GLIBC_TWINS]
    for label, slow, fast, target in ratios:
        if slow in results and fast in results:
            ratio = results[slow]["ms"] / results[fast]["ms"]
            if target is None:
                print(f"- {label}: {ratio:.1f}x")
            else:
                verdict = "meets" if ratio >= target else "misses"
                print(f"- {label}: {ratio:.1f}x ({verdict} the target of {target:g}x)")


if __name__ == "__main__":
    main()
