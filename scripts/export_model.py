"""Exports a trained model as a shipped one: ``src/sisr/weights/NAME.safetensors``.

Usage: python scripts/export_model.py NAME [--continues] EXPERIMENT[@N] [EXPERIMENT[@N] ...]

EXPERIMENT folders are the training runs that made the model, in order (a warm-started run after the
run it started from, ``@N`` where the next run started from that run's checkpoint at iteration N); the
weights are the EMA weights of the last one's ``models/net_g_latest.pth`` (or ``net_g_N.pth``).
With ``--continues`` the first run warm-started from the shipped file ``NAME`` itself (its
``path.pretrain_network_g``), so the runs that file records come first: training goes on across
sessions whose machines keep nothing but the repository.
The file's metadata records, besides the architecture and its arguments:

- ``training``: every run's config, iterations, hardware (the checkpoint's ``hardware`` entry: CPU or
  GPU, by name, and torch version) and training set (the summary in the ``manifest.json`` that
  ``scripts/build_trainset.py`` wrote beside the run's ``dataroot_gt``), and the total iterations;
- ``quality``: PSNR-Y / SSIM-Y of the model and of bicubic on the held-out photographs
  (:mod:`sisr.heldout`), measured here.

Needs the test extra (scikit-image) and the training sets' manifests. Never run in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from sisr.checkpoint import model_from_weights, read_weights, save_safetensors
from sisr.errors import SisrError
from sisr.heldout import measure
from sisr.models import scale_of
from sisr.shipped import WEIGHTS_DIR

MANIFEST_KEYS = (
    "description",
    "script",
    "packages",
    "licenses",
    "kept",
    "max_short_side",
    "scales",
    "subimages",
    "hard_fraction",
    "hard_subimages",
    "crop_size",
    "step",
)


def _checkpoint(run: str) -> Path:
    """``EXPERIMENT`` -> its latest checkpoint; ``EXPERIMENT@N`` -> its checkpoint at iteration N."""
    folder, _, step = run.partition("@")
    return Path(folder) / "models" / (f"net_g_{int(step)}.pth" if step else "net_g_latest.pth")


def _stage(run: str) -> dict[str, Any]:
    state = torch.load(_checkpoint(run), map_location="cpu", weights_only=True)
    experiment = Path(run.partition("@")[0])
    config = yaml.safe_load((experiment / "config.yml").read_text())
    # dataroot_gt is <set>/hr_sub; build_trainset.py writes <set>/manifest.json.
    manifest_path = Path(config["datasets"]["train"]["dataroot_gt"]).parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    return {
        "experiment": experiment.name,
        "iterations": int(state["step"]),
        "config": config,
        # What it ran on (absent from checkpoints written before sisr recorded it).
        "hardware": state.get("hardware"),
        "data": {k: manifest[k] for k in MANIFEST_KEYS if k in manifest},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the shipped model's name, e.g. seemore-t-x4")
    parser.add_argument(
        "experiments",
        nargs="+",
        help="training runs, first to last; EXPERIMENT@N for a run that the next one left at iteration N",
    )
    parser.add_argument(
        "--weights",
        choices=("params_ema", "params"),
        default="params_ema",
        help="which weights to ship (default: the EMA; params where a short warm-started run's EMA still "
        "carries much of the freshly initialised layers)",
    )
    parser.add_argument(
        "--continues",
        action="store_true",
        help="the first run warm-started from the shipped NAME.safetensors: keep the runs it records",
    )
    args = parser.parse_args()

    out = WEIGHTS_DIR / f"{args.name}.safetensors"
    stages = [_stage(e) for e in args.experiments]
    if args.continues:
        start = Path(stages[0]["config"]["path"]["pretrain_network_g"] or "")
        if start.resolve() != out.resolve():
            raise SisrError(f"--continues: {args.experiments[0]} did not start from {out} but from {start}")
        stages = read_weights(out).metadata["training"]["stages"] + stages
    weights = read_weights(_checkpoint(args.experiments[-1]), param_key=args.weights)
    model = model_from_weights(weights).eval()
    scale = scale_of(model)
    quality = measure(model, scale)
    training = {
        "stages": stages,
        "iterations": sum(s["iterations"] for s in stages),
        "weights": "EMA" if args.weights == "params_ema" else "params",
    }
    save_safetensors(
        out,
        arch=weights.arch,
        args=weights.args,
        params=weights.state_dict,
        metadata={"training": training, "quality": quality.as_dict()},
    )
    print(
        f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): {training['iterations']} iterations, "
        f"PSNR-Y {quality.psnr_y:.2f} dB vs bicubic {quality.bicubic_psnr_y:.2f} dB ({quality.gain:+.2f})"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (SisrError, OSError, KeyError) as e:
        print(f"export_model: error: {e}", file=sys.stderr)
        sys.exit(1)
