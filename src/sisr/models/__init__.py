"""The networks, and the presets that name them.

``ARCHS`` maps an architecture name to its class; ``PRESETS`` maps a preset name to its architecture and
constructor arguments (the scale is given separately). Both are plain dicts: nothing registers itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sisr.errors import SisrError
from sisr.models.mma import MMA
from sisr.models.mma import VARIANTS as MMA_VARIANTS
from sisr.models.seemore import VARIANTS as SEEMORE_VARIANTS
from sisr.models.seemore import SeemoRe

ARCHS: dict[str, type[nn.Module]] = {"mma": MMA, "seemore": SeemoRe}

# The keyword that carries the upscaling factor in each constructor (the official names differ).
SCALE_ARG: dict[str, str] = {"mma": "upscale", "seemore": "scale"}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: ("mma", dict(args)) for name, args in MMA_VARIANTS.items()},
    **{name: ("seemore", dict(args)) for name, args in SEEMORE_VARIANTS.items()},
}


def build(arch: str, args: dict[str, Any], *, where: str | None = None) -> nn.Module:
    """Builds an architecture from its constructor arguments.

    Args:
        arch: A key of ``ARCHS``.
        args: Keyword arguments of the constructor.
        where: Where the arguments come from, to start error messages with (``"network_g"`` for a
            config); by default the architecture's name.

    Raises:
        SisrError: One line for an unknown architecture, an unknown or missing keyword, or a value out
            of range, e.g. ``network_g: topk 9 must be between 1 and num_experts (3)``.
    """
    if arch not in ARCHS:
        raise SisrError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    try:
        return ARCHS[arch](**args)
    except (TypeError, ValueError) as err:  # an unknown or missing keyword; a value out of range
        raise SisrError(f"{where or arch}: {err}") from None


def create_model(name: str, scale: int) -> nn.Module:
    """Builds a freshly initialised network from a preset name.

    Args:
        name: One of ``PRESETS``: ``"mma"`` (the paper's), ``"mma-s"`` (48 features, 6 blocks: the
            shipped ``mma-s-x2``/``x4``), ``"seemore-t"``, ``"seemore-b"``, ``"seemore-l"``.
        scale: Upscaling factor (2, 3 or 4; MMA also takes 8, 16, ...).

    Returns:
        The network in training mode, mapping (B, 3, H, W) in [0, 1] to (B, 3, scale*H, scale*W).

    Raises:
        SisrError: An unknown preset, or a scale the architecture does not take.
    """
    if name not in PRESETS:
        raise SisrError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    arch, args = PRESETS[name]
    return build(arch, {**args, SCALE_ARG[arch]: scale}, where=name)


def arch_of(model: nn.Module) -> str:
    """The ``ARCHS`` name of a network instance."""
    for name, cls in ARCHS.items():
        if isinstance(model, cls):
            return name
    raise SisrError(f"not a sisr network: {type(model).__name__}")


def scale_of(model: nn.Module) -> int:
    """The upscaling factor of a network instance."""
    return int(getattr(model, SCALE_ARG[arch_of(model)]))
