"""What the commands driven by an option file (``train``, ``test``) share: overrides anywhere after
CONFIG, and loading the file with the keys it ignores printed."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sisr.errors import SisrError

if TYPE_CHECKING:
    from sisr.config import Config


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Declares CONFIG and the KEY=VALUE overrides (``--KEY=VALUE`` is read by :func:`parse_args`)."""
    p.add_argument("config", metavar="CONFIG", help="the YAML option file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="option overrides, anywhere after CONFIG, also as --KEY=VALUE (e.g. train.total_iter=1000)",
    )


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parses options and overrides in any order; ``args.overrides`` keeps the command line's order.

    A ``--dotted.key=value`` token whose key is not an option of `parser` is an override, like
    ``dotted.key=value``.

    Raises:
        SisrError: A positional argument after CONFIG that is not ``KEY=VALUE``.
    """
    known = {s for action in parser._actions for s in action.option_strings}
    tokens = list(argv)
    dashed = {
        i
        for i, token in enumerate(tokens)
        if token.startswith("--") and "=" in token and token.split("=", 1)[0] not in known
    }
    args = parser.parse_intermixed_args([t for i, t in enumerate(tokens) if i not in dashed])
    plain = list(args.overrides)
    for item in plain:
        if "=" not in item:
            raise SisrError(f"{item!r}: expected an option or a config override KEY=VALUE")
    ordered = []
    for i, token in enumerate(tokens):
        if i in dashed:
            ordered.append(token[2:])
        elif plain and token == plain[0]:
            ordered.append(plain.pop(0))
    args.overrides = ordered + plain
    return args


def load(path: str, overrides: Sequence[str]) -> Config:
    """Loads the option file and prints ``ignored: KEY: REASON`` for each key without effect.

    Under torchrun only rank 0 prints.
    """
    from sisr.config import load_config

    config, ignored = load_config(path, overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        for item in ignored:
            print(f"ignored: {item.path}: {item.reason}", flush=True)
    return config
