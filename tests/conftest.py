"""Shared fixtures: small crops of scikit-image's bundled photos (no download at run time)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data


@pytest.fixture
def rgb_photo() -> np.ndarray:
    """(40, 48, 3) uint8 crop of ``skimage.data.astronaut()`` (face and badge: edges and texture)."""
    return np.ascontiguousarray(data.astronaut()[100:140, 180:228])


@pytest.fixture
def gray_photo() -> np.ndarray:
    """(40, 48) uint8 crop of ``skimage.data.camera()``."""
    return np.ascontiguousarray(data.camera()[90:130, 200:248])


@pytest.fixture
def rgba_photo() -> np.ndarray:
    """(40, 48, 4) uint8: a crop of ``skimage.data.chelsea()`` with a soft elliptical alpha mask."""
    rgb = data.chelsea()[60:100, 120:168]
    y, x = np.mgrid[:40, :48]
    alpha = np.clip(255 * (1.5 - ((y - 20) / 16) ** 2 - ((x - 24) / 20) ** 2), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.dstack([rgb, alpha]))


@pytest.fixture
def rgb16_photo() -> np.ndarray:
    """(40, 48, 3) uint16: a crop of ``skimage.data.coffee()`` with seeded low bytes, so both bytes matter."""
    rgb = data.coffee()[150:190, 250:298].astype(np.uint16)
    low = np.random.default_rng(0).integers(0, 256, rgb.shape, dtype=np.uint16)
    return rgb << 8 | low
