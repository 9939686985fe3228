"""The selective scan of Mamba and the other fused ops of the networks' fast paths, as plain ops (nothing here
knows about networks).

- :func:`selective_scan`: one direction, by the fastest available path (fused CPU kernel, mamba_ssm on
  CUDA, else the chunked plain-PyTorch scan), beside :func:`selective_scan_ref`, the readable loop;
- :func:`selective_scan_bidirectional`: both directions of Vim's bimamba v2 in one call, beside
  :func:`selective_scan_bidirectional_ref`;
- :func:`conv1d_silu`: Mamba's short convolution and SiLU before the scan, by the compiled kernel
  (inference), beside :func:`conv1d_silu_ref`;
- :func:`gated_dwconv3x3`: the gated-dconv FFN's depthwise 3x3 conv, GELU and gate, by the compiled
  kernel (inference), beside :func:`gated_dwconv3x3_ref`;
- :func:`layer_norm_rows`: a layer norm over short contiguous rows (SeemoRe's channels), by the compiled
  kernel (inference, float32 and bfloat16), beside :func:`layer_norm_rows_ref`;
- :class:`ScanInputs`: one direction's inputs; :func:`fused_available`: whether the CPU kernel is built.

The backends, :mod:`sisr.ops._fused` (with ``csrc/``) and :mod:`sisr.ops._chunked`, are private.
"""

from sisr.ops.conv1d import conv1d_silu, conv1d_silu_ref
from sisr.ops.dwconv import gated_dwconv3x3, gated_dwconv3x3_ref
from sisr.ops.layernorm import layer_norm_rows, layer_norm_rows_ref
from sisr.ops.selective_scan import (
    ScanInputs,
    fused_available,
    selective_scan,
    selective_scan_bidirectional,
    selective_scan_bidirectional_ref,
    selective_scan_ref,
)

__all__ = [
    "ScanInputs",
    "conv1d_silu",
    "conv1d_silu_ref",
    "fused_available",
    "gated_dwconv3x3",
    "gated_dwconv3x3_ref",
    "layer_norm_rows",
    "layer_norm_rows_ref",
    "selective_scan",
    "selective_scan_bidirectional",
    "selective_scan_bidirectional_ref",
    "selective_scan_ref",
]
