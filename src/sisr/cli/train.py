"""``sisr train CONFIG [KEY=VALUE ...] [--dry-run] [--resume [PATH]]``: over :func:`sisr.train.train`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sisr.cli._config import add_config_arguments, load, parse_args
from sisr.cli.argtypes import positive_float

__all__ = ["add_arguments", "parse_args", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr train``."""
    p.description = (
        "Train a network. Any option of the file can be overridden with dotted.key=value (or "
        "--dotted.key=value) anywhere after CONFIG, the value read as YAML, e.g. train.total_iter=1000. "
        "Under torchrun every process trains on its shard of the data (batch_size_per_gpu is per process)."
    )
    add_config_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="continue from a checkpoint (default: this experiment's models/net_g_latest.pth)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU if any)")
    p.add_argument("--deterministic", action="store_true", help="use torch's deterministic algorithms only")
    p.add_argument(
        "--time-limit",
        type=positive_float,
        default=None,
        metavar="MINUTES",
        help="stop after the first iteration that ends this many minutes into the loop, with a checkpoint "
        "there (--resume continues)",
    )


def run(args: argparse.Namespace) -> int:
    """Prints the resolved config (``--dry-run``) or trains."""
    overrides = list(args.overrides)
    resume = args.resume
    if isinstance(resume, str) and "=" in resume and not Path(resume).exists():
        overrides.append(resume)  # "--resume key=value": the bare flag, then an override
        resume = True
    if args.dry_run:
        from sisr.config import dry_run

        print(dry_run(args.config, overrides), end="")
        return 0
    from sisr.train import train

    config = load(args.config, overrides)
    time_limit = None if args.time_limit is None else 60.0 * args.time_limit
    train(config, resume=resume, device=args.device, deterministic=args.deterministic, time_limit=time_limit)
    return 0
