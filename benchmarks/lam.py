"""What the shipped x4 models look at: LAM's Diffusion Index on held-out photographs (the README's LAM table).

For each case, a 128x128 crop of one of scikit-image's photographs (none is in the training set) is the
HR image, and a 16x16 window on an edge or a texture is attributed for every model, with the reference's
settings (sigma 1.2, fold 50, kernel 9, PIL bicubic LR): the same computation as ``sisr lam`` (it calls
:func:`sisr.analysis.lam.lam`, as the command does). Crops keep the run to minutes on a small CPU: each
attribution is ``fold`` forward and backward passes over the whole crop. It prints a Markdown table of
DI per photograph, and of the share of the attribution lying far from the window, and writes a figure
with, per case, the window and each model's map and KDE over the LR.

Usage: python benchmarks/lam.py [--models NAME ...] [--fold N] [--figure PATH]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sisr.analysis.figures import comparison_figure, stack_rows
from sisr.analysis.lam import LamResult, LamSettings, lam
from sisr.checkpoint import load_model
from sisr.data.images import write_image
from sisr.heldout import photo
from sisr.runtime import reuse_freed_memory

CROP = 128
FAR = 8  # LR pixels around the window's LR footprint that count as "near"
# (photograph, top, left of the crop, what the window (at (56, 56) unless given) sits on, window position)
CASES: list[tuple[str, int, int, str, tuple[int, int]]] = [
    ("astronaut", 352, 96, "edges: the badge's lettering", (56, 56)),
    ("chelsea", 48, 112, "edge: the pupil's rim", (56, 56)),
    ("chelsea", 0, 180, "texture: fur stripes", (56, 56)),
    ("coffee", 0, 236, "edge: the cup's rim", (20, 56)),
    ("rocket", 100, 0, "texture: the tower's lattice", (56, 56)),
]


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def far_share(result: LamResult) -> float:
    """Share of the map's total attribution lying more than ``FAR`` LR pixels outside the window."""
    h, w = result.settings.pos
    s, win = result.scale, result.settings.window
    top, left = max(0, h // s - FAR), max(0, w // s - FAR)
    bottom, right = (h + win) // s + FAR, (w + win) // s + FAR
    near = result.map[top:bottom, left:right].sum(dtype=np.float64)
    return float(1.0 - near / result.map.sum(dtype=np.float64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mma-s-x4", "seemore-t-x4"])
    parser.add_argument("--fold", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--figure", type=Path, default=Path("docs/lam_x4.png"))
    args = parser.parse_args()
    reuse_freed_memory()
    models = {name: load_model(name) for name in args.models}

    print(
        f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{CROP}x{CROP} HR crops, window 16, sigma 1.2, fold {args.fold}, kernel 9, PIL bicubic LR\n"
    )
    heads = [f"DI {m}" for m in models] + [f"far {m}" for m in models]
    print(f"| photograph | crop (top, left) | window (H, W) | on | {' | '.join(heads)} |")
    print(f"|---|---|---|---|{'---:|' * len(heads)}")
    rows, dis, fars, seconds = [], {m: [] for m in models}, {m: [] for m in models}, []
    for name, top, left, kind, pos in CASES:
        hr = photo(name)[top : top + CROP, left : left + CROP].copy()
        settings = LamSettings(pos=pos, fold=args.fold)
        results: list[LamResult] = []
        for model_name, model in models.items():
            start = time.perf_counter()
            results.append(lam(model, hr, settings, name=model_name, batch_size=args.batch_size))
            seconds.append(time.perf_counter() - start)
            dis[model_name].append(results[-1].diffusion_index)
            fars[model_name].append(far_share(results[-1]))
        cells = " | ".join(
            [f"{r.diffusion_index:.2f}" for r in results] + [f"{far_share(r):.2%}" for r in results]
        )
        print(f"| {name} | ({top}, {left}) | {pos} | {kind} | {cells} |", flush=True)
        label = f"{name} ({kind.split(':')[0]})"
        rows.append(comparison_figure(results, label=label, font_size=12, across=True))
    means = [f"**{np.mean(v):.2f}**" for v in dis.values()] + [f"**{np.mean(v):.2%}**" for v in fars.values()]
    print(f"| mean | | | | {' | '.join(means)} |")
    print(f"\nfar: share of the attribution more than {FAR} LR pixels outside the window's LR footprint")
    print(f"\n{len(seconds)} attributions, {sum(seconds) / len(seconds):.1f} s each on average")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.figure, stack_rows(rows))
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
