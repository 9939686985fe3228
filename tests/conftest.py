"""Shared fixtures: one thread for small networks; a spy on the compiled kernel's ops; small crops of
scikit-image's bundled photos (no download at run time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from skimage import data


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test, restored after it (``pytestmark = pytest.mark.usefixtures``).

    Small networks run ~1000 tiny ops per forward: with OpenMP hand-offs on a busy 2-core machine
    several threads made test_seemore.py 10x slower (647 s vs 70 s, both measured under load).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """``calls = kernel_calls("op")`` puts a spy in front of the compiled kernel (``sisr.ops._fused``)
    for the test: every call of its op ``op`` appends ``"op"`` to ``calls`` and runs the real one."""
    from sisr.ops import _fused

    def spy(name: str) -> list[str]:
        kernel, calls = _fused._kernel(), []

        class Spy:
            def __getattr__(self, attr: str) -> Any:
                real = getattr(kernel, attr)
                if attr != name:
                    return real

                def record(*args: object) -> Any:
                    calls.append(name)
                    return real(*args)

                return record

        monkeypatch.setattr(_fused, "_kernel", lambda: Spy())
        return calls

    return spy


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
