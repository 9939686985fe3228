"""Argument checks of the network constructors.

Each raises ``ValueError`` with a message that names the argument, its value and the valid range, e.g.
``topk 9 must be between 1 and num_experts (3)``; :func:`sisr.models.build` turns it into a one-line
``SisrError`` that says where the arguments came from.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_positive", "check_rgb"]


def check_int(name: str, value: object, *, low: int, high: int | None = None, high_name: str = "") -> None:
    """Requires an integer ``low <= value`` (and ``<= high``, named ``high_name`` in the message)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if high is not None and not low <= value <= high:
        bound = f"{high_name} ({high})" if high_name else str(high)
        raise ValueError(f"{name} {value} must be between {low} and {bound}")
    if value < low:
        raise ValueError(f"{name} {value} must be at least {low}")


def check_positive(name: str, value: object) -> None:
    """Requires a finite number above zero (a factor that the network divides by)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} {value!r} must be a positive finite number")


def check_rgb(name: str, value: object) -> None:
    """Requires 3 image channels: the networks shift by an RGB mean (3 values) before and after."""
    check_int(name, value, low=1)
    if value != 3:
        raise ValueError(f"{name} {value} is not supported; the network's RGB mean shift needs 3 channels")
