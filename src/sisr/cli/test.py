"""``sisr test CONFIG [KEY=VALUE ...]``: over :func:`sisr.evaluate.evaluate_config`."""

from __future__ import annotations

import argparse

from sisr.cli._config import add_config_arguments, load, parse_args
from sisr.cli.evaluate import add_run_options

__all__ = ["add_arguments", "parse_args", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr test``."""
    p.description = (
        "Load CONFIG (BasicSR option file, e.g. the official test_*.yml), build network_g, load "
        "path.pretrain_network_g into it (the checkpoint must match network_g), and score every "
        "test/val dataset with the metrics of val.metrics. Options and config overrides, KEY=VALUE or "
        "--KEY=VALUE (e.g. path.pretrain_network_g=net.pth), may come in any order after CONFIG."
    )
    add_config_arguments(p)
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    """Prints the keys the config ignores, then the table."""
    from sisr.evaluate import evaluate_config

    config = load(args.config, args.overrides)
    evaluate_config(
        config,
        batch_size=args.batch_size,
        self_ensemble=args.self_ensemble,
        tile=args.tile,
        device=args.device,
        precision=args.precision,
    )
    return 0
