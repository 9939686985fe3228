"""mma-s-x4's forward with its FFN 1x1 convolutions as ``PointwiseConv2d`` against plain ``nn.Conv2d``,
interleaved in one process at 1 thread (ratios of medians; absolute times vary with the machine's load).

Usage: python benchmarks/conv1x1.py [--size 64] [--reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from sisr.checkpoint import load_model
from sisr.models._pointwise import PointwiseConv2d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model("mma-s-x4")
    pointwise = [m for m in model.modules() if isinstance(m, PointwiseConv2d)]
    x = torch.rand(1, 3, args.size, args.size)
    times: dict[str, list[float]] = {"nn.Conv2d": [], "PointwiseConv2d": []}
    with torch.inference_mode():
        outs = {}
        for _ in range(args.reps + 1):
            for name in times:
                fast = name == "PointwiseConv2d"
                for m in pointwise:  # the plain convolution's forward, or the class's own
                    m.forward = m.forward if fast else nn.Conv2d.forward.__get__(m)
                    if fast:
                        del m.forward
                start = time.perf_counter()
                outs[name] = model(x)
                times[name].append(time.perf_counter() - start)
    base, new = (statistics.median(t[1:]) for t in times.values())
    diff = ((outs["PointwiseConv2d"] - outs["nn.Conv2d"]).abs().max() / outs["nn.Conv2d"].abs().max()).item()
    print(
        f"mma-s-x4 at {args.size}^2, 1 thread: nn.Conv2d {base * 1e3:.0f} ms, "
        f"PointwiseConv2d {new * 1e3:.0f} ms"
    )
    print(f"ratio {new / base:.2f}; max relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
