"""The models shipped inside the package (``sisr/weights/NAME.safetensors``) and the default choice.

A shipped model is named ``<family>-x<scale>`` (``seemore-t-x4``, ``mma-s-x2``), and a model trained
for real-world inputs (Real-ESRGAN's degradations, :mod:`sisr.data.degradations`) adds ``-real``
(``seemore-t-x4-real``). ``sisr upscale`` without ``--model`` takes :data:`DEFAULT_FAMILY` at ``--scale``
(default 4), and ``--real`` its ``-real`` model. :func:`sisr.load_model` accepts these names as well as
files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sisr.errors import SisrError
from sisr.models import SCALE_ARG

__all__ = [
    "DEFAULT_FAMILY",
    "WEIGHTS_DIR",
    "ShippedModel",
    "choose_model",
    "shipped_model_info",
    "shipped_models",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
# `sisr upscale` without --model: this family at --scale (default 4).
DEFAULT_FAMILY = "seemore-t"
_NAME = re.compile(r"(?P<family>.+)-x(?P<scale>\d+)(?P<real>-real)?")


def shipped_models() -> dict[str, Path]:
    """Name -> file of every model shipped inside the package (``sisr/weights/NAME.safetensors``)."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"), key=lambda p: p.stem)}


@dataclass(frozen=True)
class ShippedModel:
    """What a shipped model's file says about it.

    Attributes:
        name: Its name, e.g. ``"seemore-t-x4"``.
        path: Its file.
        arch: ``ARCHS`` name.
        scale: Upscaling factor.
        params: Number of parameters.
        size: File size in bytes.
        iterations: Training iterations, all runs included (None if not recorded).
        quality: PSNR-Y / SSIM-Y of the model and of bicubic on held-out photographs, as measured by
            ``scripts/export_model.py`` (see :class:`sisr.heldout.Quality`), or None.
    """

    name: str
    path: Path
    arch: str
    scale: int
    params: int
    size: int
    iterations: int | None
    quality: dict[str, Any] | None


def shipped_model_info(name: str) -> ShippedModel:
    """Describes a shipped model from its file, without building the network.

    Raises:
        SisrError: No shipped model has this name, or its file lacks the architecture.
    """
    # Imported here: sisr.checkpoint imports this module to resolve shipped names in load_model.
    from sisr.checkpoint import read_weights

    path = shipped_models().get(name)
    if path is None:
        raise SisrError(f"unknown model {name!r}; shipped: {', '.join(shipped_models()) or 'none'}")
    weights = read_weights(path)
    if weights.arch is None or weights.args is None:
        raise SisrError(f"{path}: the file does not declare its architecture")
    return ShippedModel(
        name=name,
        path=path,
        arch=weights.arch,
        scale=int(weights.args[SCALE_ARG[weights.arch]]),
        params=sum(t.numel() for t in weights.state_dict.values()),
        size=path.stat().st_size,
        iterations=weights.metadata.get("training", {}).get("iterations"),
        quality=weights.metadata.get("quality"),
    )


def choose_model(model: str | None, scale: int | None, *, real: bool = False) -> str:
    """The model ``sisr upscale --model MODEL --scale SCALE [--real]`` means.

    Without ``model`` it is the default family (``seemore-t``). A family name (a shipped name without
    its ``-xN`` suffix, e.g. ``mma-s``) takes the suffix of ``scale`` (default 4), and with `real` also
    ``-real``. Anything else (a file, a full shipped name) is returned unchanged; the caller checks that
    its scale matches ``scale``.

    Raises:
        SisrError: The family has no model for ``scale`` (with `real`: no real-world one), or `real`
            is given with a file or a full name.
    """
    family = DEFAULT_FAMILY if model is None else model
    shipped = shipped_models()
    if family in shipped or Path(family).exists():
        if real:
            raise SisrError(f"--real picks a family's real-world model; {family} is a model itself")
        return family
    parsed = [m for m in (_NAME.fullmatch(n) for n in shipped) if m is not None]
    members = [m for m in parsed if m["family"] == family]
    if not members and model is not None:
        return family  # not a family: load_model reports what is wrong with it
    wanted = 4 if scale is None else scale
    scales = sorted(int(m["scale"]) for m in members if bool(m["real"]) == real)
    if wanted not in scales:
        have = ", ".join(f"x{s}" for s in scales) or "none"
        if real:
            raise SisrError(
                f"no shipped real-world {family} model for x{wanted} (shipped real-world: {have})"
            )
        raise SisrError(f"no shipped {family} model for x{wanted} (shipped: {have})")
    return f"{family}-x{wanted}" + ("-real" if real else "")
