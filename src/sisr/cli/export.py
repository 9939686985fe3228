"""``sisr export MODEL OUT.onnx``: over :func:`sisr.export.export_onnx`."""

from __future__ import annotations

import argparse
import re

from sisr.errors import SisrError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr export``."""
    p.description = (
        "Export a network to ONNX. SeemoRe keeps its per-image expert routing inside the graph; batch, "
        "height and width are dynamic unless --static fixes height and width. The file is verified with "
        "ONNX Runtime on two sizes and a batch of two images before it is kept, against PyTorch in "
        "float32: in fp32 the max abs difference must stay within 1e-4, in fp16 every image within 45 dB "
        "PSNR (uint8 outputs); otherwise the export fails and no file is left."
    )
    p.add_argument("model", metavar="MODEL", help="a shipped model (see `sisr models`) or a checkpoint file")
    p.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default: 18)")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="weights and input/output type; bf16 is refused, as ONNX Runtime's CPU provider cannot run "
        "it (default: %(default)s)",
    )
    p.add_argument("--static", metavar="HxW", default=None, help="fix the input height and width")


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> (H, W), both at least 1."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None or min(int(match[1]), int(match[2])) < 1:
        raise SisrError(f"--static must be HxW with positive integers, e.g. 256x256, got {text!r}")
    return int(match[1]), int(match[2])


def run(args: argparse.Namespace) -> int:
    """Exports, verifies and prints ``MODEL -> OUT (xS, max abs diff D on SHAPES)``."""
    static = None if args.static is None else parse_size(args.static)
    from sisr.export import DEFAULT_OPSET, export_onnx

    result = export_onnx(
        args.model,
        args.output,
        opset=DEFAULT_OPSET if args.opset is None else args.opset,
        precision=args.precision,
        static=static,
    )
    shapes = ", ".join("x".join(map(str, s)) for s in result.shapes)
    against = "ONNX Runtime vs PyTorch" if result.precision == "fp32" else "ONNX Runtime fp16 vs PyTorch fp32"
    psnr = "" if result.precision == "fp32" else f"PSNR {result.min_psnr:.1f} dB (lowest), "
    print(
        f"{args.model} -> {result.path} (x{result.scale}, {result.arch}); {against}: {psnr}"
        f"max abs diff {result.max_abs_diff:.3g} on {shapes}"
    )
    return 0
