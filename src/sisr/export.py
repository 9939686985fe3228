"""ONNX export of a network, verified with ONNX Runtime before it is kept (what ``sisr export`` does).

SeemoRe exports with its routing inside the graph: under export every mixture layer runs all its experts
and weights them by the router's top-k softmax weights scattered over the experts (TopK and
ScatterElements in the graph), so each image of a batch gets its own experts, as in eager evaluation.
MMA exports its bidirectional selective scan as two ONNX ``Scan`` loops over the pixels (the reference
recurrence, one position per iteration), so H and W stay dynamic and nothing is approximated. The batch,
H and W are dynamic unless `static` fixes H and W.

The file is written atomically and only kept when ONNX Runtime, on two sizes and a batch of two images
that differ (noise and a checkerboard), matches PyTorch within the tolerance of the precision.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sisr.atomic import atomic_write
from sisr.errors import SisrError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = ["DEFAULT_OPSET", "TOLERANCE", "ExportResult", "Precision", "export_onnx", "verify_inputs"]

Precision = Literal["fp32", "fp16", "bf16"]
DEFAULT_OPSET = 18
# Max abs difference from PyTorch (on the same device and precision) above which the export fails.
TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2}
# Metadata keys that `sisr upscale -m FILE.onnx` reads back (sisr.onnx_model).
META_SCALE, META_MIN_SIZE, META_ARCH = "sisr.scale", "sisr.min_size", "sisr.arch"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime matched PyTorch."""

    path: Path
    arch: str
    scale: int
    max_abs_diff: float  # over every verification input
    shapes: tuple[tuple[int, int, int, int], ...]  # the verification inputs, (B, C, H, W)


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
        precision: ``fp32`` or ``fp16`` (weights, input and output in that type); ``bf16`` is refused.
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
    if precision not in TOLERANCE:
        raise SisrError(
            f"precision {precision} is not supported for ONNX export (supported: {', '.join(TOLERANCE)}); "
            "ONNX Runtime has no bf16 kernels on the CPU for these networks"
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

    model = load_model(model_source, device="cpu")
    arch = arch_of(model)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = model.to(dtype)
    scale = scale_of(model)
    min_size = int(getattr(model, "min_size", 1))
    if static is not None and min(static) < min_size:
        raise SisrError(f"--static {static[0]}x{static[1]} is below this model's smallest input {min_size}")
    inputs = verify_inputs(min_size=min_size, static=static, dtype=dtype)
    meta = {META_SCALE: str(scale), META_MIN_SIZE: str(min_size), META_ARCH: arch}

    worst: list[float] = []

    def write(tmp: str) -> None:
        _export(model, tmp, opset=opset, static=static, example=inputs[0], min_size=min_size, meta=meta)
        try:
            diff = _verify(model, tmp, inputs)
        except Exception as e:  # onnxruntime's errors have no common public base class
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SisrError(
                f"{out}: ONNX Runtime cannot run the export ({first}); the file is not kept"
            ) from None
        worst.append(diff)
        if not diff <= TOLERANCE[precision]:  # also NaN
            raise SisrError(
                f"{out}: ONNX Runtime differs from PyTorch by {diff:.3g} (max abs), above "
                f"{TOLERANCE[precision]:g} for {precision}; the file is not kept"
            )

    try:
        atomic_write(out, write)
    except OSError as e:
        raise SisrError(f"{out}: cannot write: {e.strerror or e}") from None
    return ExportResult(
        path=out, arch=arch, scale=scale, max_abs_diff=worst[0], shapes=tuple(tuple(x.shape) for x in inputs)
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


def _verify(model: nn.Module, path: str, inputs: list[Tensor]) -> float:
    """Largest abs difference between ONNX Runtime (CPU) and PyTorch over `inputs`."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.inference_mode():
            ref = model(x).float().numpy()
        got: np.ndarray = session.run(None, {"input": x.numpy()})[0]
        worst = max(worst, float(np.abs(got.astype(np.float32) - ref).max()))
    return worst
