"""The selective scan of Mamba, as plain ops.

- :func:`selective_scan`: one direction, by the fastest available path (fused CPU kernel, mamba_ssm on
  CUDA, else the chunked plain-PyTorch scan);
- :func:`selective_scan_bidirectional`: both directions of Vim's bimamba v2 in one call;
- :func:`selective_scan_ref`: the readable reference loop, for tests;
- :func:`selective_scan_chunked`: the best plain-PyTorch path.
"""

from sisr.ops.chunked import selective_scan_chunked
from sisr.ops.fused import ScanInputs, fused_available
from sisr.ops.fused import selective_scan_bidirectional_fast as selective_scan_bidirectional
from sisr.ops.scan import selective_scan, selective_scan_ref

__all__ = [
    "ScanInputs",
    "fused_available",
    "selective_scan",
    "selective_scan_bidirectional",
    "selective_scan_chunked",
    "selective_scan_ref",
]
