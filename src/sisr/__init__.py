"""sisr: single-image super-resolution with MMA and SeemoRe.

The public API, imported on first use so that ``import sisr.metrics`` stays light:

- :func:`create_model` builds a fresh network from a preset name;
- :func:`load_model` loads official checkpoints, sisr checkpoints, safetensors and shipped models;
- :func:`upscale` runs a network on a numpy image, optionally in tiles;
- :func:`selective_scan` is Mamba's selective scan as a plain op.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "sisr.models",
    "load_model": "sisr.checkpoint",
    "upscale": "sisr.inference",
    "selective_scan": "sisr.ops",
    "SisrError": "sisr.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sisr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
