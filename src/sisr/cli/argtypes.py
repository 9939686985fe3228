"""Argument types shared by the commands' parsers."""

from __future__ import annotations

import argparse


def non_negative_int(text: str) -> int:
    """An integer >= 0, for argparse's ``type=``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1, for argparse's ``type=``."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0, for argparse's ``type=``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """``--precision fp32|bf16|fp16``, checked for the device and architecture by :mod:`sisr.precision`."""
    from sisr.precision import PRECISIONS

    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="inference precision: bf16 on CUDA and CPUs with AVX512-BF16 or AMX, fp16 on CUDA and MPS, "
        "each only where the architecture's measured gate allows it (default: %(default)s)",
    )


def add_inference_device_arguments(p: argparse.ArgumentParser, *, max_pixels_note: str = "") -> None:
    """``--device``, ``--precision`` and ``--max-pixels``, as every command that upscales images takes them.

    Args:
        p: The command's parser.
        max_pixels_note: Words after "more pixels than this" in the help of ``--max-pixels``.
    """
    from sisr.data.images import DEFAULT_MAX_PIXELS

    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    add_precision_argument(p)
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse input images with more pixels than this{max_pixels_note} (default: %(default)s)",
    )
