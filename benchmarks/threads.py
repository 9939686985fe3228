"""Thread count and OpenMP wait policy, on an idle and on a loaded CPU (the README's "Threads" table).

Each setting runs in a fresh subprocess, because OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads
it: threads 1 and 2 (``--threads``) x ``OMP_WAIT_POLICY`` unset (GOMP's default: spin a while, then
sleep), ``ACTIVE`` and ``PASSIVE`` x idle and loaded. "Loaded" means this script first starts 1, then 2
background processes that each keep a core busy (a Python busy loop, ``--loads``), and kills them when
that load level is done. Each subprocess builds the network (seeded random weights), runs one warm-up
forward and ``--repeat`` timed ones under ``torch.inference_mode()``, and reports the median. The table
gives each cell's wall time as a multiple of the 1-thread, policy-unset, idle cell of the same run.

Workloads: SeemoRe-T x4 on 256x256 and mma-s x4 on 128x128 (``--workloads``; ``--size`` shrinks every
input for a quick look). An "idle" column is only idle if nothing else runs on the machine.

Usage: python benchmarks/threads.py [--repeat 3] [--threads 1 2] [--loads 0 1 2] [--size N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKLOADS: dict[str, tuple[str, str, int, int]] = {  # name -> (label, preset, scale, LR side)
    "seemore-t-x4-256": ("SeemoRe-T x4, 256x256", "seemore-t", 4, 256),
    "mma-s-x4-128": ("mma-s x4, 128x128", "mma-s", 4, 128),
}
POLICIES = ("unset", "ACTIVE", "PASSIVE")
_BURN = "while True: pass"


def run_cell(workload: str, size: int | None, repeat: int) -> float:
    """In this (fresh) process: the median forward time of `workload`, in ms."""
    import torch

    from sisr.models import create_model

    _, preset, scale, side = WORKLOADS[workload]
    side = size or side
    torch.manual_seed(0)
    model = create_model(preset, scale).eval()
    x = torch.rand(1, 3, side, side)
    times = []
    with torch.inference_mode():
        for _ in range(1 + repeat):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def _cell(workload: str, threads: int, policy: str, args: argparse.Namespace) -> float | str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--cell", workload, "--repeat", str(args.repeat)]
    if args.size:
        cmd += ["--size", str(args.size)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    return float(json.loads(done.stdout.strip().splitlines()[-1])["ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed forwards per cell after one warm-up")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2], help="busy background processes")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--size", type=int, default=None, help="LR side for every workload (quick look)")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: time one workload, print JSON
    args = parser.parse_args()
    if args.cell:
        print(json.dumps({"ms": run_cell(args.cell, args.size, args.repeat)}))
        return

    import torch

    from sisr.analysis.profile import machine

    print(f"{machine()}; load average at start {os.getloadavg()[0]:.2f}; median of {args.repeat} forwards\n")
    settings = [(t, p) for t in args.threads for p in POLICIES]
    results: dict[tuple[str, int, int, str], float | str] = {}
    for load in args.loads:
        burners = [subprocess.Popen([sys.executable, "-c", _BURN]) for _ in range(load)]
        try:
            time.sleep(0.5 if load else 0.0)
            for workload in args.workloads:
                for threads, policy in settings:
                    results[workload, load, threads, policy] = _cell(workload, threads, policy, args)
        finally:
            for p in burners:
                p.kill()
                p.wait()
    del torch
    print("| network | threads | OMP_WAIT_POLICY | " + " | ".join(_load_name(n) for n in args.loads) + " |")
    print("|---|---:|---|" + "---:|" * len(args.loads))
    for workload in args.workloads:
        base = results.get((workload, args.loads[0], 1, "unset"))
        for threads, policy in settings:
            cells = []
            for load in args.loads:
                r = results[workload, load, threads, policy]
                if isinstance(r, str) or not isinstance(base, float):
                    cells.append(str(r) if isinstance(r, str) else f"{r:,.0f} ms")
                else:
                    cells.append(f"{r / base:.2f}x")
            label = (
                WORKLOADS[workload][0] if args.size is None else f"{WORKLOADS[workload][0]} at {args.size}"
            )
            print(f"| {label} | {threads} | {policy} | " + " | ".join(cells) + " |")
        if isinstance(base, float):
            print(f"| (1 thread, unset, {_load_name(args.loads[0])} = {base:,.0f} ms) | | | |")


def _load_name(n: int) -> str:
    return "idle" if n == 0 else f"{n} busy core" + ("s" if n > 1 else "")


if __name__ == "__main__":
    main()
