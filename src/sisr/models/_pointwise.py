"""1x1 convolutions of channels-last inputs as a matrix product over channels.

PyTorch sends a 1x1 ``nn.Conv2d`` on the CPU in float32 with one thread and an unbatched, unstrided input
to its native ``aten::_slow_conv2d_forward`` instead of oneDNN (``use_mkldnn`` in ATen's ConvUtils: "for
1x1 filters, MKLDNN is faster than THNN when multi-threaded, but THNN is faster when single-threaded").
For a contiguous (NCHW) input that native path is itself one gemm over the (C, H*W) view, as fast as
oneDNN or a matrix product (``benchmarks/conv1x1.py``). For a channels-last input, which MMA's FFN gets
from its LayerNorm over the permuted features, it first copies the whole input to NCHW. A 1x1
convolution of a channels-last input is exactly ``linear`` over the contiguous (B, H, W, C) view, with
no copy, and its output is channels-last, as oneDNN's would be.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PointwiseConv2d"]


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, 1)``, with the same parameters and state-dict keys.

    A channels-last input on the CPU runs as ``F.linear`` over its (B, H, W, C) view; everything else as
    ``nn.Conv2d``. Outputs equal the convolution's within float rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous():
            return super().forward(x)
        nhwc = x.permute(0, 2, 3, 1)  # (B, H, W, C): contiguous for a channels-last x
        if not nhwc.is_contiguous():
            return super().forward(x)
        weight = self.weight.view(self.out_channels, self.in_channels)  # (C_out, C_in)
        return F.linear(nhwc, weight, self.bias).permute(0, 3, 1, 2)  # (B, C_out, H, W), channels-last
