"""Data-loading cost of a training sample, per run of ``scripts/device_train.sh``, on this CPU.

Each run's training dataset is built from its ``configs/shipped/`` file (on ``--set``, the folder that
``scripts/build_trainset.py`` wrote) and samples are drawn from the runs in turn, one thread, so that the
runs are compared in one interleaved measurement. The degraded runs make their LR image in the loader
workers (:mod:`sisr.data.degradations`), so this is what sizes ``WORKERS_<RUN>`` in the script: a
worker supplies about ``1000 / ms`` samples per second, and a run of batch B at R iterations per second
needs ``B * R`` of them.

Usage: python benchmarks/loader.py [--set datasets/trainset2] [--samples 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sisr.config import load_config
from sisr.data.build import datasets_from_config
from sisr.runtime import cpu_info

# The runs of scripts/device_train.sh: (config, whether it reads the LR sub-images).
RUNS = {
    "x4_real": ("seemore_t_x4_real.yml", False),
    "x2_real": ("seemore_t_x2_real.yml", False),
    "x4": ("seemore_t_x4_stage3.yml", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="datasets/trainset2", help="a built training set")
    parser.add_argument("--samples", type=int, default=60, help="samples per run (default: 60)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.set)
    datasets = {}
    for run, (config, paired) in RUNS.items():
        overrides = [f"datasets.train.dataroot_gt={root / 'hr_sub'}"]
        if paired:
            overrides += [
                f"datasets.train.dataroot_lq={root / 'lr_sub' / 'X4'}",
                f"datasets.train.meta_info_file={root / 'meta_info_hard.txt'}",
            ]
        cfg, _ = load_config(Path("configs/shipped") / config, overrides)
        datasets[run] = (cfg, datasets_from_config(cfg, phases=("train",))["train"])
    seconds = dict.fromkeys(RUNS, 0.0)
    for i in range(args.samples + 2):
        for run, (_, dataset) in datasets.items():
            start = time.perf_counter()
            dataset[(i * 7919) % len(dataset)]
            if i >= 2:  # the first two of each run warm up
                seconds[run] += time.perf_counter() - start
    print(
        f"Machine: {cpu_info().describe()}, torch {torch.__version__}, one thread; "
        f"{args.samples} samples each"
    )
    print()
    print("| run | config | GT patch | LR made | ms per sample | samples/s per worker |")
    print("|---|---|---:|---|---:|---:|")
    for run, (cfg, _) in datasets.items():
        train = cfg.datasets["train"]
        made = "degradations" if train.degradation is not None else "read (paired)"
        ms = 1000 * seconds[run] / args.samples
        gt = train.gt_size
        print(f"| {run} | {RUNS[run][0]} | {gt}x{gt} | {made} | {ms:.1f} | {1000 / ms:.0f} |")


if __name__ == "__main__":
    main()
