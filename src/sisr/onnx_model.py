"""An exported ONNX file run through ONNX Runtime, shaped like a network for :mod:`sisr.inference`.

:class:`OnnxModel` is an ``nn.Module`` without parameters whose forward hands the batch to an ONNX Runtime
session, so :func:`sisr.inference.upscale_tensor` tiles, pads and blends it exactly as a PyTorch network.
onnxruntime is imported only here (the ``onnx`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sisr.errors import SisrError

__all__ = ["OnnxModel", "is_onnx_path", "load_onnx_model"]

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def is_onnx_path(source: str | os.PathLike[str]) -> bool:
    """Whether `source` names an ONNX file (by its extension)."""
    return Path(source).suffix.lower() == ".onnx"


class OnnxModel(nn.Module):
    """Maps (B, 3, H, W) floats to (B, 3, sH, sW) through an ONNX Runtime session on the CPU.

    Attributes:
        scale: The upscaling factor, from the file's ``sisr.scale`` metadata or measured on a probe.
        min_size: The smallest input side (``sisr.min_size``; 1 when the file does not say).
    """

    def __init__(self, *, path: Path, session: object, scale: int, min_size: int) -> None:
        super().__init__()
        self.path = path
        self.session = session
        self.scale = scale
        self.min_size = min_size
        inp = session.get_inputs()[0]  # type: ignore[attr-defined]
        self.input_name: str = inp.name
        self.input_dtype = _DTYPES[inp.type]

    def forward(self, x: Tensor) -> Tensor:
        """Runs the session on `x` (any float dtype, on the CPU); returns float32."""
        feed = x.detach().cpu().float().numpy().astype(self.input_dtype, copy=False)
        try:
            (y,) = self.session.run(None, {self.input_name: feed})[:1]  # type: ignore[attr-defined]
        except Exception as e:  # onnxruntime's errors have no common public base class
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SisrError(
                f"{self.path}: ONNX Runtime failed on a {tuple(x.shape)} input: {first}"
            ) from None
        return torch.from_numpy(np.asarray(y, dtype=np.float32))


def load_onnx_model(source: str | os.PathLike[str], *, device: str = "cpu") -> OnnxModel:
    """Opens an ONNX super-resolution file (as written by :func:`sisr.export.export_onnx`).

    Args:
        source: The ``.onnx`` file.
        device: Only ``cpu``: the session runs on ONNX Runtime's CPU provider.

    Raises:
        SisrError: onnxruntime is missing, the file is missing or not an ONNX model, it does not take one
            float (B, 3, H, W) image batch, or `device` is not the CPU.
    """
    path = Path(source)
    if device != "cpu":
        raise SisrError(f"{path}: ONNX models run on the CPU only (got --device {device})")
    if not path.is_file():
        raise SisrError(f"{path}: no such file")
    try:
        import onnxruntime as ort
    except ImportError:
        raise SisrError("running .onnx models needs onnxruntime: pip install 'sisr[onnx]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    try:
        session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # InvalidProtobuf, Fail, ...: no common public base class
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SisrError(f"{path}: not a usable ONNX model ({first})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1 or len(inputs[0].shape) != 4 or inputs[0].type not in _DTYPES:
        raise SisrError(f"{path}: not an image model (needs one float (B, 3, H, W) input)")
    meta = session.get_modelmeta().custom_metadata_map
    try:
        min_size = int(meta.get("sisr.min_size", "1"))
        scale = int(meta["sisr.scale"]) if "sisr.scale" in meta else 0
    except ValueError:
        raise SisrError(f"{path}: bad sisr metadata {dict(meta)}") from None
    model = OnnxModel(path=path, session=session, scale=scale, min_size=min_size)
    if scale < 1:  # a file from elsewhere: measure the scale on a probe of its input size
        _, _, h, w = (d if isinstance(d, int) else max(16, min_size) for d in inputs[0].shape)
        y = model(torch.zeros(1, 3, h, w))
        if y.ndim != 4 or y.shape[-1] % w or y.shape[-1] // w < 1:
            raise SisrError(f"{path}: not a super-resolution model (output {tuple(y.shape)})")
        model.scale = y.shape[-1] // w
    return model.eval()
