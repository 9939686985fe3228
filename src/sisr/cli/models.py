"""``sisr models``: the table of shipped models, from :func:`sisr.shipped.shipped_model_info`."""

from __future__ import annotations

import argparse

from sisr.errors import SisrError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the (no) arguments of ``sisr models``."""
    p.description = (
        "List the models shipped with sisr: scale, parameters, file size, training iterations and "
        "the PSNR-Y measured on held-out photographs (scikit-image's, not in the training set) "
        "against bicubic on the same inputs (benchmarks/quality.py re-measures it)."
    )


def run(args: argparse.Namespace) -> int:
    """Prints one row per shipped model."""
    from sisr.shipped import DEFAULT_FAMILY, shipped_model_info, shipped_models

    names = list(shipped_models())
    if not names:
        raise SisrError("no models are shipped with this installation")
    rows = [("name", "arch", "scale", "params", "size", "iterations", "PSNR-Y", "bicubic", "gain")]
    infos = [shipped_model_info(name) for name in names]
    for m in infos:
        q = m.quality
        rows.append(
            (
                m.name + (" (default)" if m.name == f"{DEFAULT_FAMILY}-x4" else ""),
                m.arch,
                f"x{m.scale}",
                f"{m.params:,}",
                f"{m.size / 1024:.0f} KiB",
                "?" if m.iterations is None else f"{m.iterations:,}",
                "?" if q is None else f"{q['psnr_y']:.2f}",
                "?" if q is None else f"{q['bicubic_psnr_y']:.2f}",
                "?" if q is None else f"{q['psnr_y'] - q['bicubic_psnr_y']:+.2f} dB",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(cells).rstrip())
    measured = [m.quality for m in infos if m.quality]
    if measured:
        print(f"PSNR-Y: mean over held-out photographs ({', '.join(measured[0]['photos'])}), crop = scale")
    return 0
