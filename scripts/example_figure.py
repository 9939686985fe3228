"""Makes the README's example: the bundled input image and the side-by-side crops of results.

Usage: python scripts/example_figure.py [--model seemore-t-x4] [--real-model seemore-t-x4-real]

- ``examples/chelsea.png``: scikit-image's ``chelsea`` photograph (CC0, Stefan van der Walt), reduced 4x
  by MATLAB's bicubic ``imresize`` (112 x 75 pixels). It is not in the training set of the shipped models.
  The README's first command upscales it.
- ``docs/example_x4.png``: the same crop of the input, of bicubic, of the model's result and of the
  original photograph, side by side at the same zoom (the input and the result magnified with nearest
  neighbour, so every pixel shows).
- ``docs/real_q75_x4.png``: the same crop when the input was saved as a JPEG of quality 75 (Pillow, as
  ``sisr.heldout``'s ``jpeg75``): the input, bicubic, the clean model, the real-world model and the
  original.

Needs the test extra (scikit-image).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sisr.checkpoint import load_model
from sisr.data.images import write_image
from sisr.heldout import bicubic_up, degrade_lr, lr_of, photo
from sisr.inference import upscale
from sisr.metrics import modcrop
from sisr.models import scale_of

ROOT = Path(__file__).resolve().parent.parent
INPUT = ROOT / "examples" / "chelsea.png"
FIGURE = ROOT / "docs" / "example_x4.png"
REAL_FIGURE = ROOT / "docs" / "real_q75_x4.png"
CROP = (slice(20, 52), slice(52, 100))  # LR pixels: the cat's eye, whiskers and fur (32 x 48)
ZOOM = 8  # screen pixels per LR pixel
GAP = 4


def _nearest(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _side_by_side(path: Path, lr: np.ndarray, hr: np.ndarray, results: list[np.ndarray]) -> None:
    """Writes the crop of the input, bicubic, each result and the original, side by side."""
    ys, xs = CROP
    hr_crop = (slice(ys.start * 4, ys.stop * 4), slice(xs.start * 4, xs.stop * 4))
    panels = [_nearest(lr[CROP], ZOOM), _nearest(bicubic_up(lr, 4)[hr_crop], ZOOM // 4)]
    panels += [_nearest(result[hr_crop], ZOOM // 4) for result in results]
    panels.append(_nearest(hr[hr_crop], ZOOM // 4))
    height = panels[0].shape[0]
    gap = np.full((height, GAP, 3), 255, np.uint8)
    row = [gap] * (2 * len(panels) - 1)
    row[::2] = panels
    write_image(path, np.concatenate(row, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seemore-t-x4", help="a x4 model (default: %(default)s)")
    parser.add_argument(
        "--real-model", default="seemore-t-x4-real", help="a x4 real-world model (default: %(default)s)"
    )
    args = parser.parse_args()

    hr = modcrop(photo("chelsea"), 4)
    lr = lr_of(hr, 4)
    INPUT.parent.mkdir(exist_ok=True)
    FIGURE.parent.mkdir(exist_ok=True)
    write_image(INPUT, lr)
    print(f"wrote {INPUT} ({lr.shape[1]} x {lr.shape[0]})")

    model, real = load_model(args.model), load_model(args.real_model)
    for name, net in ((args.model, model), (args.real_model, real)):
        if scale_of(net) != 4:
            raise SystemExit(f"{name} upscales x{scale_of(net)}; the figures need x4 models")
    _side_by_side(FIGURE, lr, hr, [upscale(model, lr)])
    print(f"wrote {FIGURE}: input | bicubic | {args.model} | original, {ZOOM}x zoom of the input")
    jpeg = degrade_lr(lr, "jpeg75", photo_name="chelsea")
    _side_by_side(REAL_FIGURE, jpeg, hr, [upscale(model, jpeg), upscale(real, jpeg)])
    print(
        f"wrote {REAL_FIGURE}: JPEG q75 input | bicubic | {args.model} | {args.real_model} | original, "
        f"{ZOOM}x zoom of the input"
    )


if __name__ == "__main__":
    main()
