"""ONNX export of a network, verified with ONNX Runtime before it is kept (what ``sisr export`` does).

SeemoRe exports with its routing inside the graph: under export every mixture layer runs all its experts
and weights them by the router's top-k softmax weights scattered over the experts (TopK and
ScatterElements in the graph), so each image of a batch gets its own experts, as in eager evaluation.
MMA exports its bidirectional selective scan as two ONNX ``Scan`` loops over the pixels (the reference
recurrence, one position per iteration), so H and W stay dynamic and nothing is approximated. The batch,
H and W are dynamic unless `static` fixes H and W.

The file is written atomically and only kept when ONNX Runtime (CPU), on two sizes and a batch of two
images that differ (noise and a checkerboard), matches PyTorch in float32: in fp32 within 1e-4 max abs
difference; in fp16 (weights, input and output in float16) within ``GATE_DB`` (45 dB) PSNR of float32
PyTorch on every image, both rounded to uint8, the measure of :mod:`sisr.precision`'s gate. bf16 is
refused: ONNX Runtime's CPU provider has no bf16 convolution (a bf16 graph does not load), so the file
could not be verified.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sisr.atomic import atomic_write
from sisr.errors import SisrError
from sisr.precision import GATE_DB

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = [
    "DEFAULT_OPSET",
    "FP16_MIN_PSNR",
    "TOLERANCE",
    "ExportResult",
    "Precision",
    "export_onnx",
    "verify_inputs",
]

Precision = Literal["fp32", "fp16", "bf16"]
DEFAULT_OPSET = 18
# fp32: max abs difference from float32 PyTorch above which the export fails.
TOLERANCE: dict[str, float] = {"fp32": 1e-4}
# fp16: the lowest PSNR (dB, uint8 outputs) against float32 PyTorch that keeps the file: the precision gate's.
FP16_MIN_PSNR = GATE_DB
_EXPORTABLE = ("fp32", "fp16")
# Metadata keys that `sisr upscale -m FILE.onnx` reads back (sisr.onnx_model).
META_SCALE, META_MIN_SIZE, META_ARCH = "sisr.scale", "sisr.min_size", "sisr.arch"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime matched PyTorch."""

    path: Path
    arch: str
    scale: int
    max_abs_diff: float  # from float32 PyTorch, over every verification input
    shapes: tuple[tuple[int, int, int, int], ...]  # the verification inputs, (B, C, H, W)
    precision: str = "fp32"
    min_psnr: float = float("inf")  # dB from float32 PyTorch, uint8 outputs, lowest over the images


def export_onnx(
    model_source: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    precision: Precision = "fp32",
    static: tuple[int, int] | None = None,
) -> ExportResult:
    """Exports a network to ONNX and verifies the file with ONNX Runtime on the CPU.

    Args:
        model_source: A shipped model's name or a checkpoint file (as :func:`sisr.checkpoint.load_model`).
        out_path: The ``.onnx`` file to write; its folder must exist.
        opset: ONNX opset version (18 or later).
        precision: ``fp32`` or ``fp16`` (weights, input and output in that type), verified against
            float32 PyTorch (fp32: max abs difference 1e-4; fp16: :data:`FP16_MIN_PSNR` dB); ``bf16`` is
            refused (ONNX Runtime's CPU provider cannot run it).
        static: (H, W) to fix the input size; None keeps batch, H and W dynamic (the batch stays dynamic
            either way).

    Returns:
        Where the file went and the largest difference from PyTorch seen in verification.

    Raises:
        SisrError: Bad input (unknown model, not ``.onnx``, unwritable folder, refused precision or
            architecture, opset too old), or the verification failed (then no file is left).
    """
    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise SisrError(f"{out}: the output must be an .onnx file")
    if precision not in _EXPORTABLE:
        raise SisrError(
            f"precision {precision} is not supported for ONNX export (supported: {', '.join(_EXPORTABLE)}): "
            "ONNX Runtime's CPU provider has no bf16 convolution, so the file could not be verified"
        )
    if opset < DEFAULT_OPSET:
        raise SisrError(f"--opset must be at least {DEFAULT_OPSET}, got {opset}")
    folder = out.parent
    if not folder.is_dir():
        raise SisrError(f"{out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SisrError(f"{out}: folder {folder} is not writable")
    if out.is_dir():
        raise SisrError(f"{out}: is a folder")
    _import_onnx()

    import torch

    from sisr.checkpoint import load_model
    from sisr.models import arch_of, scale_of

    reference = load_model(model_source, device="cpu")  # float32: what the file is verified against
    arch = arch_of(reference)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = reference if precision == "fp32" else copy.deepcopy(reference).to(dtype)
    scale = scale_of(model)
    min_size = int(getattr(model, "min_size", 1))
    if static is not None and min(static) < min_size:
        raise SisrError(f"--static {static[0]}x{static[1]} is below this model's smallest input {min_size}")
    inputs = verify_inputs(min_size=min_size, static=static, dtype=torch.float32)
    meta = {META_SCALE: str(scale), META_MIN_SIZE: str(min_size), META_ARCH: arch}

    worst: list[tuple[float, float]] = []

    def write(tmp: str) -> None:
        example = inputs[0].to(dtype)
        _export(model, tmp, opset=opset, static=static, example=example, min_size=min_size, meta=meta)
        try:
            diff, db = _verify(reference, tmp, inputs, dtype=dtype)
        except Exception as e:  # onnxruntime's errors have no common public base class
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SisrError(
                f"{out}: ONNX Runtime cannot run the export ({first}); the file is not kept"
            ) from None
        worst.append((diff, db))
        if precision == "fp32" and not diff <= TOLERANCE["fp32"]:  # also NaN
            raise SisrError(
                f"{out}: ONNX Runtime differs from PyTorch by {diff:.3g} (max abs), above "
                f"{TOLERANCE['fp32']:g} for fp32; the file is not kept"
            )
        if precision == "fp16" and not db >= FP16_MIN_PSNR:  # also NaN
            raise SisrError(
                f"{out}: ONNX Runtime in fp16 is {db:.1f} dB PSNR from float32 PyTorch, below "
                f"{FP16_MIN_PSNR:g} dB; the file is not kept"
            )

    try:
        atomic_write(out, write)
    except OSError as e:
        raise SisrError(f"{out}: cannot write: {e.strerror or e}") from None
    return ExportResult(
        path=out,
        arch=arch,
        scale=scale,
        max_abs_diff=worst[0][0],
        shapes=tuple(tuple(x.shape) for x in inputs),
        precision=precision,
        min_psnr=worst[0][1],
    )


def verify_inputs(*, min_size: int, static: tuple[int, int] | None, dtype: torch.dtype) -> list[Tensor]:
    """The verification batches: two differing images at one size, and one image at a second size.

    The batch of two is uniform noise and a one-pixel checkerboard, which the shipped SeemoRe-T x4 routes
    to different experts in a layer; with `static` both batches have the static size.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    if static is not None:
        sizes = [static, static]
    else:
        side = max(24, min_size)
        sizes = [(side, side + 8), (side + 13, side + 3)]
    (h, w), (h2, w2) = sizes
    noise = torch.rand(3, h, w, generator=g)
    checker = ((torch.arange(h)[:, None] + torch.arange(w)) % 2).float().expand(3, h, w)
    pair = torch.stack([noise, checker])  # (2, 3, h, w)
    single = torch.rand(1, 3, h2, w2, generator=g)
    return [pair.to(dtype), single.to(dtype)]


def _import_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SisrError(
            f"ONNX export needs the onnx extra ({e.name} is missing): pip install 'sisr[onnx]'"
        ) from None


def _export(
    model: nn.Module,
    path: str,
    *,
    opset: int,
    static: tuple[int, int] | None,
    example: Tensor,
    min_size: int,
    meta: dict[str, str],
) -> None:
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    if static is None:
        h = torch.export.Dim("height", min=min_size, max=1 << 16)
        w = torch.export.Dim("width", min=min_size, max=1 << 16)
        shapes = {"x": {0: batch, 2: h, 3: w}}
    else:
        shapes = {"x": {0: batch}}
        example = example.new_zeros((example.shape[0], example.shape[1], *static))
    # The exporter prints its progress and warns about optional torchvision ops: keep the CLI to its lines.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        registration.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["input"],
                output_names=["output"],
                opset_version=opset,
                dynamic_shapes=shapes,
                dynamo=True,
            )
        except Exception as e:  # the exporter raises many types; one line is what the user can use
            raise SisrError(f"ONNX export failed: {str(e).strip().splitlines()[0]}") from None
        finally:
            registration.setLevel(level)
    proto = program.model_proto
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)


def _verify(
    reference: nn.Module, path: str, inputs: list[Tensor], *, dtype: torch.dtype
) -> tuple[float, float]:
    """ONNX Runtime (CPU, fed `inputs` in `dtype`) against float32 PyTorch over the float32 `inputs`.

    Returns:
        The largest abs difference, and the lowest PSNR (dB) over the images, both rounded to uint8.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    from sisr.metrics import psnr

    def to_uint8(y: np.ndarray) -> np.ndarray:  # (3, H, W) float in [0, 1] -> (H, W, 3) uint8
        return np.clip(np.round(y.transpose(1, 2, 0).astype(np.float64) * 255.0), 0, 255).astype(np.uint8)

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst, lowest = 0.0, float("inf")
    for x in inputs:
        with torch.inference_mode():
            ref = reference(x).float().numpy()
        got = session.run(None, {"input": x.to(dtype).numpy()})[0].astype(np.float32)
        worst = max(worst, float(np.abs(got - ref).max()))  # NaN propagates
        if not np.isfinite(got).all():
            return float("nan"), float("nan")
        for g, r in zip(got, ref, strict=True):
            lowest = min(lowest, psnr(to_uint8(g), to_uint8(r)))
    return worst, lowest
