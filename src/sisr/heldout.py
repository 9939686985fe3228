"""Quality on held-out photographs: how the shipped models are measured.

The photographs are the ones scikit-image bundles (``skimage.data``); none of them is in the training
set of the shipped models (``scripts/build_trainset.py`` takes Debian wallpapers). The protocol is the
papers': HR cropped to a multiple of the scale, LR made by MATLAB's bicubic ``imresize(HR, 1/scale)``
and rounded to 8 bits, the output rounded to 8 bits, ``scale`` pixels cropped from each border, PSNR
and SSIM on the BT.601 Y channel. The bicubic baseline upsamples the same LR image with MATLAB's bicubic.

For models meant for real photographs, :data:`LR_DEGRADATIONS` degrades that LR image further (JPEG,
noise, blur) before it is upscaled; the HR target stays the same.

scikit-image is needed only here (``pip install 'sisr[test]'``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

from sisr.errors import SisrError
from sisr.imresize import bicubic_lr, imresize
from sisr.inference import upscale
from sisr.metrics import modcrop, psnr, ssim

__all__ = [
    "LR_DEGRADATIONS",
    "PHOTOS",
    "Quality",
    "bicubic_up",
    "degrade_lr",
    "lr_of",
    "mean_quality",
    "measure",
    "measure_each",
    "photo",
]

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


# The held-out LR image of a uint8 photograph: the benchmarks' (mod-crop, MATLAB bicubic, im2uint8).
lr_of = bicubic_lr


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic upsampling of a uint8 image, rounded to 8 bits."""
    return _to_uint8(imresize(lr.astype(np.float32) / 255.0, float(scale)))


def _tensor(lr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _jpeg(quality: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from sisr.data.degradations import jpeg

        return _to_uint8(jpeg(_tensor(lr), quality=quality)[0].permute(1, 2, 0).numpy())

    return apply


def _noise(sigma: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from sisr.data.degradations import gaussian_noise  # the training degradations' noise

        image = _tensor(lr)
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        noise = gaussian_noise(image, sigma=sigma, gray=False, generator=generator)
        return _to_uint8((image + noise)[0].permute(1, 2, 0).numpy())

    return apply


def _blur(lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from sisr.data.degradations import bivariate_gaussian, filter2d

    kernel = bivariate_gaussian(7, 0.8, 0.8, 0.0, isotropic=True)
    return _to_uint8(filter2d(_tensor(lr), kernel)[0].permute(1, 2, 0).numpy())


# Degradations of the held-out LR image (after MATLAB bicubic and rounding): name -> (lr, rng) -> lr.
LR_DEGRADATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "clean": lambda lr, rng: lr,
    "jpeg90": _jpeg(90),
    "jpeg75": _jpeg(75),
    "jpeg50": _jpeg(50),
    "noise5": _noise(5.0),  # Gaussian, sigma on the 0-255 scale
    "noise10": _noise(10.0),
    "blur": _blur,  # isotropic Gaussian, sigma 0.8 LR pixels (7x7)
}


def degrade_lr(lr: np.ndarray, degradation: str, *, photo_name: str) -> np.ndarray:
    """The held-out LR image under one of :data:`LR_DEGRADATIONS` (noise seeded by the photo's name)."""
    if degradation not in LR_DEGRADATIONS:
        raise SisrError(f"unknown degradation {degradation!r}; known: {', '.join(LR_DEGRADATIONS)}")
    rng = np.random.default_rng(zlib.crc32(f"{photo_name}/{degradation}".encode()))
    return LR_DEGRADATIONS[degradation](lr, rng)


def measure_each(
    model: nn.Module,
    scale: int,
    photos: tuple[str, ...] | list[str] = PHOTOS,
    *,
    degradation: str = "clean",
) -> list[Quality]:
    """Evaluates ``model`` and bicubic at ``scale`` on each held-out photograph on its own.

    Args:
        model: A network mapping (B, 3, H, W) in [0, 1] to (B, 3, scale*H, scale*W).
        scale: Its scale factor.
        photos: Names from ``PHOTOS``.
        degradation: A name from :data:`LR_DEGRADATIONS`, applied to the LR image of both.

    Returns:
        One ``Quality`` per photograph, in the order of ``photos``.
    """
    kw = dict(crop_border=scale, y_channel=True)
    each = []
    for name in photos:
        hr = modcrop(photo(name), scale)
        lr = degrade_lr(lr_of(hr, scale), degradation, photo_name=name)
        bic, net = bicubic_up(lr, scale), upscale(model, lr)
        scores = (psnr(net, hr, **kw), ssim(net, hr, **kw), psnr(bic, hr, **kw), ssim(bic, hr, **kw))
        each.append(Quality((name,), scale, *scores))
    return each


def measure(model: nn.Module, scale: int, photos: tuple[str, ...] | list[str] = PHOTOS) -> Quality:
    """Evaluates ``model`` and bicubic at ``scale`` on held-out photographs.

    Args:
        model: A network mapping (B, 3, H, W) in [0, 1] to (B, 3, scale*H, scale*W).
        scale: Its scale factor.
        photos: Names from ``PHOTOS``.

    Returns:
        The mean scores of the model and of bicubic over the photographs.
    """
    return mean_quality(measure_each(model, scale, photos))


def mean_quality(each: list[Quality]) -> Quality:
    """The mean of per-photograph scores at one scale (as ``measure`` returns)."""
    if not each or len({q.scale for q in each}) != 1:
        raise ValueError("mean_quality needs scores at one scale")
    cols = np.mean([(q.psnr_y, q.ssim_y, q.bicubic_psnr_y, q.bicubic_ssim_y) for q in each], axis=0)
    photos = tuple(name for q in each for name in q.photos)
    return Quality(photos, each[0].scale, float(cols[0]), float(cols[1]), float(cols[2]), float(cols[3]))
