"""Quality on held-out photographs: how the shipped models are measured.

The photographs are the ones scikit-image bundles (``skimage.data``); none of them is in the training
set of the shipped models (``scripts/build_trainset.py`` takes Debian wallpapers). The protocol is the
papers': HR cropped to a multiple of the scale, LR made by MATLAB's bicubic ``imresize(HR, 1/scale)``
and rounded to 8 bits, the output rounded to 8 bits, ``scale`` pixels cropped from each border, PSNR
and SSIM on the BT.601 Y channel. The bicubic baseline upsamples the same LR image with MATLAB's bicubic.

scikit-image is needed only here (``pip install 'sisr[test]'``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch.nn as nn

from sisr.errors import SisrError
from sisr.imresize import imresize
from sisr.inference import upscale
from sisr.metrics import modcrop, psnr, ssim

__all__ = ["PHOTOS", "Quality", "bicubic_up", "lr_of", "measure", "photo"]

PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field")


@dataclass(frozen=True)
class Quality:
    """Mean PSNR-Y (dB) and SSIM-Y of a model and of bicubic over some photographs.

    Attributes:
        photos: The photographs' names (``PHOTOS``).
        scale: The scale factor.
        psnr_y: The model's mean PSNR-Y.
        ssim_y: The model's mean SSIM-Y.
        bicubic_psnr_y: Bicubic's mean PSNR-Y on the same LR images.
        bicubic_ssim_y: Bicubic's mean SSIM-Y.
    """

    photos: tuple[str, ...]
    scale: int
    psnr_y: float
    ssim_y: float
    bicubic_psnr_y: float
    bicubic_ssim_y: float

    @property
    def gain(self) -> float:
        """PSNR-Y over bicubic, in dB."""
        return self.psnr_y - self.bicubic_psnr_y

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (as stored in a shipped model's metadata)."""
        return {**asdict(self), "photos": list(self.photos)}


def photo(name: str) -> np.ndarray:
    """A photograph bundled with scikit-image, as uint8 RGB (H, W, 3).

    Raises:
        SisrError: scikit-image is not installed, or ``name`` is not in ``PHOTOS``.
    """
    if name not in PHOTOS:
        raise SisrError(f"unknown photograph {name!r}; known: {', '.join(PHOTOS)}")
    try:
        import skimage.data
    except ImportError:
        raise SisrError("the held-out photographs need scikit-image: pip install 'sisr[test]'") from None
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def lr_of(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic LR image of a mod-cropped uint8 HR image, rounded to 8 bits like ``im2uint8``."""
    return _to_uint8(imresize(hr.astype(np.float32) / 255.0, 1.0 / scale))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic upsampling of a uint8 image, rounded to 8 bits."""
    return _to_uint8(imresize(lr.astype(np.float32) / 255.0, float(scale)))


def measure(model: nn.Module, scale: int, photos: tuple[str, ...] | list[str] = PHOTOS) -> Quality:
    """Evaluates ``model`` and bicubic at ``scale`` on held-out photographs.

    Args:
        model: A network mapping (B, 3, H, W) in [0, 1] to (B, 3, scale*H, scale*W).
        scale: Its scale factor.
        photos: Names from ``PHOTOS``.

    Returns:
        The mean scores of the model and of bicubic.
    """
    bic, net = [], []
    for name in photos:
        hr = modcrop(photo(name), scale)
        lr = lr_of(hr, scale)
        for out, store in ((bicubic_up(lr, scale), bic), (upscale(model, lr), net)):
            kw = dict(crop_border=scale, y_channel=True)
            store.append((psnr(out, hr, **kw), ssim(out, hr, **kw)))
    b, n = np.mean(bic, axis=0), np.mean(net, axis=0)
    return Quality(tuple(photos), scale, float(n[0]), float(n[1]), float(b[0]), float(b[1]))
