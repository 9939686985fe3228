"""SeemoRe: "See More Details: Efficient Image Super-Resolution by Experts Mining".

Zamfir, Wu, Mehta, Zhang and Timofte, ICML 2024 (arXiv 2402.03412). Official code:
github.com/eduardzamfir/seemoredetails (``basicsr/archs/seemore_arch.py``).

The network is a stack of residual groups. Each group has a local block (a mixture of low-rank experts,
selected per image by a router) followed by a global block (striped depthwise convolutions used as an
attention substitute), each with a gated feed-forward network. Module attribute paths match the official
code, so the official checkpoints load with ``load_state_dict(strict=True)``.

Differences to the official code (outputs are unchanged wherever the official code runs):

* In eval mode the official mixture-of-experts layer only works for a batch of one image. Here every
  image in a batch is routed to its own top-k experts, and each expert runs only on the images that
  selected it; the result for each image equals the official result for that image alone.
* The official ``lr_space`` default is the integer ``1``, which the official code rejects; the default
  here is ``"linear"`` (the default of the official mixture-of-experts block). The released models use
  ``"exp"``, see :data:`VARIANTS`.
* The RGB mean is a non-persistent buffer, so it follows ``.to()`` without entering the state dict.

Fast path: in CPU inference (eval mode, autograd off, see :mod:`sisr.models._fastpath`) in float32, or in
bfloat16 under CPU autocast to it, the blocks run their ``fused`` methods instead: channels_last features,
oneDNN convolutions with the GELU, the gating product and the residual add fused in
(:mod:`sisr.models._fused`), the convolutions feeding a ``chunk`` split into one convolution per half, a layer
norm over the channels by the compiled kernel of :func:`sisr.ops.layer_norm_rows`. In bfloat16 it computes in
bfloat16 wherever autocast's reference does (every convolution and the router), with autocast turned off and
the weights cast per call, and returns float32 as the reference does. Same routing, same values within float
(or bfloat16) rounding (tests/test_seemore_fast.py); everywhere else the reference code runs.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sisr.errors import SisrError
from sisr.models._checks import check_int, check_positive, check_rgb
from sisr.models._fastpath import fast_path_dtype
from sisr.models._fused import conv2d, conv2d_binary, fused_convs_available, layer_norm_channels

LrSpace = Literal["linear", "exp", "double"]

# Mean of DIV2K in RGB, subtracted before and added back after the network (as in the official code).
_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _fast_dtype(module: nn.Module, x: Tensor) -> torch.dtype | None:
    """The dtype in which `module`'s fused oneDNN path replaces its reference for input `x`, or None.

    Only in eval mode, in float32 or bfloat16 CPU inference (see :func:`fast_path_dtype`), with oneDNN
    built and enabled (``torch.backends.mkldnn.flags(enabled=False)`` turns it off).
    """
    if module.training or not (fused_convs_available() and torch.backends.mkldnn.enabled):
        return None
    return fast_path_dtype(x)


def _fast(module: nn.Module, x: Tensor) -> bool:
    """Whether `module`'s fused oneDNN path replaces its reference for input `x` (see :func:`_fast_dtype`)."""
    return _fast_dtype(module, x) is not None


def _expert_rank(lr_space: LrSpace, index: int) -> int:
    """Width of the low-rank bottleneck of expert `index` (0-based) for a growth rule."""
    if lr_space == "linear":
        return index + 2
    if lr_space == "exp":
        return 2 ** (index + 1)
    if lr_space == "double":
        return 2 * index + 2
    raise ValueError(f"lr_space must be 'linear', 'exp' or 'double', got {lr_space!r}")


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of a (B, C, H, W) tensor, with eps 1e-6."""

    def __init__(self, *, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if _fast(self, x):
            return layer_norm_channels(x, self.weight, self.bias, self.eps)
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        var = centred.pow(2).mean(dim=1, keepdim=True)
        x = centred / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class StripedConv2d(nn.Module):
    """A k x k receptive field from a 1 x k then a k x 1 depthwise convolution."""

    def __init__(self, *, dim: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=(1, kernel_size), padding=(0, pad), groups=dim),
            nn.Conv2d(dim, dim, kernel_size=(kernel_size, 1), padding=(pad, 0), groups=dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class GatedFFN(nn.Module):
    """Feed-forward network whose hidden half is gated by a depthwise 3x3 convolution of the other half."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.fn_1 = nn.Sequential(nn.Conv2d(dim, 2 * dim, kernel_size=1), nn.GELU())
        self.fn_2 = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=1), nn.GELU())
        self.gate = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.fn_1(x).chunk(2, dim=1)  # 2 x (B, C, H, W)
        x = x * self.gate(gate)
        return self.fn_2(x)

    def fused(self, x: Tensor, *, residual: Tensor) -> Tensor:
        """``residual + self(x)`` by fused oneDNN calls (fast path; see :mod:`sisr.models._fused`)."""
        c = x.shape[1]
        # fn_1 as two convolutions, one per output half, so that neither half is a strided view.
        x, gate = (
            conv2d(self.fn_1[0], x, unary="gelu", weight=w, bias=b) for w, b in _halves(self.fn_1[0], c)
        )
        x = conv2d_binary(self.gate, gate, x, binary="mul")
        return conv2d(self.fn_2[0], x, unary="gelu").add_(residual)


def _halves(conv: nn.Conv2d, c: int, order: Tensor | None = None) -> list[tuple[Tensor, Tensor | None]]:
    """Weight and bias of the two output halves [:c] and [c:] of `conv`, after reordering by `order`."""
    weight, bias = conv.weight, conv.bias
    if order is not None:
        weight = weight[order]
        bias = None if bias is None else bias[order]
    return [
        (weight[:c], None if bias is None else bias[:c]),
        (weight[c:], None if bias is None else bias[c:]),
    ]


class StripedConvFormer(nn.Module):
    """Attention substitute: a value modulated by a query seen through a large striped convolution."""

    def __init__(self, *, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.to_qv = nn.Sequential(nn.Conv2d(dim, 2 * dim, kernel_size=1), nn.GELU())
        self.attn = StripedConv2d(dim=dim, kernel_size=kernel_size)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        q, v = self.to_qv(x).chunk(2, dim=1)  # 2 x (B, C, H, W)
        return self.proj(self.attn(q) * v)

    def fused(self, x: Tensor, *, residual: Tensor) -> Tensor:
        """``residual + self(x)`` by fused oneDNN calls (fast path; see :mod:`sisr.models._fused`)."""
        c = x.shape[1]
        q, v = (
            conv2d(self.to_qv[0], x, unary="gelu", weight=w, bias=b) for w, b in _halves(self.to_qv[0], c)
        )
        q = conv2d(self.attn.conv[0], q)  # 1 x k
        x = conv2d_binary(self.attn.conv[1], q, v, binary="mul")  # k x 1, times v
        return conv2d_binary(self.proj, x, residual, binary="add")


class SME(nn.Module):
    """Spatial modulating expert (global block): pre-norm striped-conv attention and gated FFN."""

    def __init__(self, *, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.norm_1 = LayerNorm2d(dim=dim)
        self.block = StripedConvFormer(dim=dim, kernel_size=kernel_size)
        self.norm_2 = LayerNorm2d(dim=dim)
        self.ffn = GatedFFN(dim=dim)

    def forward(self, x: Tensor) -> Tensor:
        if _fast(self, x):
            x = self.block.fused(self.norm_1(x), residual=x)
            return self.ffn.fused(self.norm_2(x), residual=x)
        x = x + self.block(self.norm_1(x))
        return x + self.ffn(self.norm_2(x))


class Expert(nn.Module):
    """Low-rank expert: projects the features and the calibration key to `rank` channels and multiplies."""

    def __init__(self, *, dim: int, rank: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(dim, rank, kernel_size=1)
        self.conv_2 = nn.Conv2d(dim, rank, kernel_size=1)
        self.conv_3 = nn.Conv2d(rank, dim, kernel_size=1)

    def forward(self, x: Tensor, k: Tensor) -> Tensor:
        if _fast(self, x):
            return conv2d(self.conv_3, conv2d_binary(self.conv_2, k, conv2d(self.conv_1, x), binary="mul"))
        return self.conv_3(self.conv_1(x) * self.conv_2(k))

    def add_scaled(self, base: Tensor, x: Tensor, k: Tensor, w: Tensor) -> Tensor:
        """``base + self(x, k) * w`` for a scalar `w`, folded into conv_3 (fast path); a new tensor."""
        h = conv2d_binary(self.conv_2, k, conv2d(self.conv_1, x), binary="mul")
        bias = None if self.conv_3.bias is None else self.conv_3.bias * w
        return conv2d_binary(self.conv_3, h, base, binary="add", weight=self.conv_3.weight * w, bias=bias)


class Router(nn.Module):
    """Per-image expert logits from globally pooled features: (B, C, H, W) -> (B, num_experts)."""

    def __init__(self, *, dim: int, num_experts: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(dim, num_experts, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        pool, flatten, linear = self.body
        # The weight in the dtype of x: the bfloat16 fast path runs with autocast off (a no-op elsewhere).
        return F.linear(flatten(pool(x)), linear.weight.to(x.dtype))


class MoELayer(nn.Module):
    """Residual mixture of low-rank experts with top-k routing per image.

    The router's softmax weights of the top-k experts of each image scale those experts' outputs; the
    other experts get weight zero (the weights are not renormalised). Training runs every expert on the
    whole batch so the gradient flows exactly as in the official code; evaluation runs each expert only
    on the images that selected it.
    """

    def __init__(self, *, dim: int, num_experts: int, topk: int, lr_space: LrSpace) -> None:
        super().__init__()
        self.topk = topk
        self.experts = nn.ModuleList(
            Expert(dim=dim, rank=_expert_rank(lr_space, i)) for i in range(num_experts)
        )
        self.gate = Router(dim=dim, num_experts=num_experts)

    def forward(self, x: Tensor, k: Tensor) -> Tensor:
        logits = self.gate(x)  # (B, E)
        probs = F.softmax(logits, dim=1, dtype=torch.float32).to(x.dtype)
        top_w, top_idx = probs.topk(self.topk, dim=1)  # (B, topk) each
        if self.training or torch.onnx.is_in_onnx_export():
            out = x.clone()
            # Dense: every expert on every image, non-selected experts weighted by zero. Under ONNX export
            # too, so that the routing stays in the graph (TopK, ScatterElements) instead of the experts
            # chosen for the export image; adding the zero-weighted experts changes no finite output.
            dense_w = torch.zeros_like(probs).scatter(1, top_idx, top_w)  # (B, E)
            for e, expert in enumerate(self.experts):
                out += expert(x, k) * dense_w[:, e, None, None, None]
            return out
        # Sparse: each expert on the images that chose it. An expert appears at most once in a row of
        # top_idx, so `rows` has no repeats and is ascending (nonzero is row-major).
        one_fast = x.shape[0] == 1 and _fast(self, x)  # fast path, one image: its weight is a scalar
        out = x if one_fast else x.clone()  # one_fast never writes into `out`
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(top_idx == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            w = top_w[rows, slot][:, None, None, None]  # (n, 1, 1, 1)
            if one_fast:
                out = expert.add_scaled(out, x, k, w.reshape(()))
            elif rows.numel() == x.shape[0]:  # the whole batch chose this expert: no gather needed
                out += expert(x, k) * w
            else:
                out.index_add_(0, rows, expert(x[rows], k[rows]) * w)
        return out


class MoEBlock(nn.Module):
    """Splits features into a value and a calibration key, and mixes them with low-rank experts.

    The key is calibrated by adding a coarse context: a shared depthwise stride-4 convolution applied
    `recursive` times, a depthwise-separable convolution and bilinear upsampling back to full size.
    """

    def __init__(
        self, *, dim: int, num_experts: int, topk: int, lr_space: LrSpace, recursive: int, use_shuffle: bool
    ) -> None:
        super().__init__()
        self.use_shuffle = use_shuffle
        self.recursive = recursive
        self.conv_1 = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=1), nn.GELU(), nn.Conv2d(dim, 2 * dim, kernel_size=1)
        )
        self.agg_conv = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=4, stride=4, groups=dim), nn.GELU())
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim), nn.Conv2d(dim, dim, kernel_size=1)
        )
        self.conv_2 = nn.Sequential(StripedConv2d(dim=dim, kernel_size=3), nn.GELU())
        self.moe_layer = MoELayer(dim=dim, num_experts=num_experts, topk=topk, lr_space=lr_space)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def fused(self, x: Tensor, *, residual: Tensor) -> Tensor:
        """``residual + self(x)`` by fused oneDNN calls (fast path; see :mod:`sisr.models._fused`)."""
        _, c, h, w = x.shape
        x = conv2d(self.conv_1[0], x, unary="gelu")
        # conv_1[2] as two convolutions, one per output half after the shuffle: shuffled channel j is
        # channel (j % 2) * C + j // 2.
        order = torch.arange(2 * c, device=x.device).view(2, c).t().reshape(-1) if self.use_shuffle else None
        x, k = (conv2d(self.conv_1[2], x, weight=wt, bias=bs) for wt, bs in _halves(self.conv_1[2], c, order))
        x = conv2d(self.conv_2[0].conv[0], x)  # 1 x 3
        x = conv2d(self.conv_2[0].conv[1], x, unary="gelu")  # 3 x 1, GELU
        ctx = k
        for _ in range(self.recursive):
            ctx = conv2d(self.agg_conv[0], ctx, unary="gelu")
        ctx = conv2d(self.conv[1], conv2d(self.conv[0], ctx))
        k = k.add_(F.interpolate(ctx, size=(h, w), mode="bilinear", align_corners=False))
        x = self.moe_layer(x, k)
        return conv2d_binary(self.proj, x, residual, binary="add")

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        x = self.conv_1(x)  # (B, 2C, H, W)
        if self.use_shuffle:
            # Interleave the two halves: channel 2c + g comes from channel g * C + c.
            x = x.view(b, 2, -1, h, w).transpose(1, 2).reshape(b, -1, h, w)
        x, k = x.chunk(2, dim=1)  # 2 x (B, C, H, W)
        x = self.conv_2(x)
        ctx = k
        for _ in range(self.recursive):
            ctx = self.agg_conv(ctx)  # (B, C, H / 4^i, W / 4^i), floored
        ctx = self.conv(ctx)
        k = k + F.interpolate(ctx, size=(h, w), mode="bilinear", align_corners=False)
        x = self.moe_layer(x, k)
        return self.proj(x)


class RME(nn.Module):
    """Rank modulating expert (local block): pre-norm mixture of low-rank experts and gated FFN."""

    def __init__(
        self, *, dim: int, num_experts: int, topk: int, lr_space: LrSpace, recursive: int, use_shuffle: bool
    ) -> None:
        super().__init__()
        self.norm_1 = LayerNorm2d(dim=dim)
        self.block = MoEBlock(
            dim=dim,
            num_experts=num_experts,
            topk=topk,
            lr_space=lr_space,
            recursive=recursive,
            use_shuffle=use_shuffle,
        )
        self.norm_2 = LayerNorm2d(dim=dim)
        self.ffn = GatedFFN(dim=dim)

    def forward(self, x: Tensor) -> Tensor:
        if _fast(self, x):
            x = self.block.fused(self.norm_1(x), residual=x)
            return self.ffn.fused(self.norm_2(x), residual=x)
        x = x + self.block(self.norm_1(x))
        return x + self.ffn(self.norm_2(x))


class ResGroup(nn.Module):
    """One stage of the body: a local RME block followed by a global SME block."""

    def __init__(
        self,
        *,
        dim: int,
        num_experts: int,
        topk: int,
        lr_space: LrSpace,
        recursive: int,
        use_shuffle: bool,
        global_kernel_size: int,
    ) -> None:
        super().__init__()
        self.local_block = RME(
            dim=dim,
            num_experts=num_experts,
            topk=topk,
            lr_space=lr_space,
            recursive=recursive,
            use_shuffle=use_shuffle,
        )
        self.global_block = SME(dim=dim, kernel_size=global_kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.global_block(self.local_block(x))


class SeemoRe(nn.Module):
    """SeemoRe super-resolution network.

    Maps a (B, in_chans, H, W) image in [0, 1] to (B, in_chans, scale * H, scale * W). H and W must be
    at least ``4 ** recursive`` (:attr:`min_size`), as the key calibration downsamples by 4 `recursive`
    times without padding.

    Args:
        scale: Upscaling factor, at least 1.
        in_chans: Number of image channels; 3 (the RGB mean shift needs them).
        num_experts: Number of low-rank experts per mixture layer, at least 1.
        num_layers: Number of residual groups, at least 1.
        embedding_dim: Feature channels, at least 1.
        img_range: Positive factor applied to the mean-shifted input (and undone at the output).
        use_shuffle: Interleave the channels before splitting value and key in the expert blocks.
        global_kernel_size: Kernel size of the striped convolutions in the global blocks; odd (with
            an even one the official code builds, then fails on its first input: the padding k // 2
            grows the features by one pixel).
        recursive: How many times the stride-4 aggregation convolution is applied to the key (0 or
            more; 0, which the official code also runs, adds the context at full resolution).
        lr_space: Growth of the experts' ranks with their index i: "linear" i + 2, "exp" 2^(i + 1),
            "double" 2i + 2. The official constructor's default (the integer 1) is invalid; the default
            here is the official mixture block's default.
        topk: Number of experts selected per image, between 1 and ``num_experts``.

    Raises:
        ValueError: An argument outside its range; the message names it and the range.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        in_chans: int = 3,
        num_experts: int = 6,
        num_layers: int = 6,
        embedding_dim: int = 64,
        img_range: float = 1.0,
        use_shuffle: bool = False,
        global_kernel_size: int = 11,
        recursive: int = 2,
        lr_space: LrSpace = "linear",
        topk: int = 2,
    ) -> None:
        super().__init__()
        check_int("scale", scale, low=1)
        check_rgb("in_chans", in_chans)
        check_int("num_experts", num_experts, low=1)
        check_int("num_layers", num_layers, low=1)
        check_int("embedding_dim", embedding_dim, low=1)
        check_positive("img_range", img_range)
        check_int("global_kernel_size", global_kernel_size, low=1)
        if global_kernel_size % 2 == 0:
            raise ValueError(f"global_kernel_size {global_kernel_size} must be odd (1, 3, 5, ...)")
        check_int("recursive", recursive, low=0)
        if lr_space not in ("linear", "exp", "double"):
            raise ValueError(f"lr_space must be 'linear', 'exp' or 'double', got {lr_space!r}")
        check_int("topk", topk, low=1, high=num_experts, high_name="num_experts")
        self.scale = scale
        self.img_range = img_range
        self.min_size = 4**recursive
        self.register_buffer("mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.conv_1 = nn.Conv2d(in_chans, embedding_dim, kernel_size=3, padding=1)
        self.body = nn.ModuleList(
            ResGroup(
                dim=embedding_dim,
                num_experts=num_experts,
                topk=topk,
                lr_space=lr_space,
                recursive=recursive,
                use_shuffle=use_shuffle,
                global_kernel_size=global_kernel_size,
            )
            for _ in range(num_layers)
        )
        self.norm = LayerNorm2d(dim=embedding_dim)
        self.conv_2 = nn.Conv2d(embedding_dim, embedding_dim, kernel_size=3, padding=1)
        self.upsampler = nn.Sequential(
            nn.Conv2d(embedding_dim, scale * scale * in_chans, kernel_size=3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolves a batch.

        Args:
            x: (B, in_chans, H, W) images in [0, 1], H and W at least :attr:`min_size`.

        Returns:
            (B, in_chans, scale * H, scale * W) images, not clamped.
        """
        h, w = x.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise SisrError(f"SeemoRe needs inputs of at least {self.min_size}x{self.min_size}, got {h}x{w}")
        mean = self.mean.to(x.dtype)
        compute = _fast_dtype(self, x)
        if compute is not None:
            with torch.autocast("cpu", enabled=False):  # the fast path casts itself
                return self._forward_fused(x, mean, compute)
        x = (x - mean) * self.img_range
        x = self.conv_1(x)  # (B, D, H, W)
        shallow = x
        for group in self.body:
            x = group(x)
        x = self.conv_2(self.norm(x)) + shallow
        x = self.upsampler(x)  # (B, in_chans, sH, sW)
        return x / self.img_range + mean

    def _forward_fused(self, x: Tensor, mean: Tensor, compute: torch.dtype) -> Tensor:
        """The forward by fused oneDNN calls on channels_last features in `compute` (fast path; same values).

        The output has the dtype of `x` (and its layout), as the reference's has under autocast.
        """
        channels_last_in = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        layout = torch.channels_last if channels_last_in else torch.contiguous_format
        x = ((x - mean) * self.img_range).to(compute).contiguous(memory_format=torch.channels_last)
        x = conv2d(self.conv_1, x)  # (B, D, H, W), channels_last from here on
        shallow = x
        for group in self.body:
            x = group(x)
        x = conv2d_binary(self.conv_2, self.norm(x), shallow, binary="add")
        # "/ img_range + mean" folded into the upsampler's convolution: its output channel j becomes
        # channel j // scale^2 after the pixel shuffle. In bfloat16 only "/ img_range" is: the mean is
        # added in float32 to the bfloat16 output (promoting it), as autocast's reference does, so that
        # it is not rounded to bfloat16.
        up = self.upsampler[0]
        weight = up.weight / self.img_range
        bias = None if up.bias is None else up.bias / self.img_range
        per_channel = mean.reshape(-1).repeat_interleave(self.scale * self.scale)
        fold_mean = compute == mean.dtype
        if fold_mean:
            bias = per_channel if bias is None else bias + per_channel
        x = conv2d(up, x, weight=weight, bias=bias)  # (B, scale^2 * in_chans, H, W)
        if not fold_mean:
            x = x + per_channel[:, None, None]
        x = self.upsampler[1](x)  # (B, in_chans, sH, sW)
        # The reference's output follows the input's layout; so does this one.
        return x.contiguous(memory_format=layout)


# Released configurations (options/super_resolution/test/test_SeemoRe_{T,B,L}_X{2,3,4}.yml); pass the
# scale separately, e.g. ``SeemoRe(scale=4, **VARIANTS["seemore-t"])``.
VARIANTS: dict[str, dict[str, Any]] = {
    "seemore-t": dict(
        num_experts=3,
        num_layers=6,
        embedding_dim=36,
        img_range=1.0,
        use_shuffle=True,
        global_kernel_size=11,
        recursive=2,
        lr_space="exp",
        topk=1,
    ),
    "seemore-b": dict(
        num_experts=3,
        num_layers=8,
        embedding_dim=48,
        img_range=1.0,
        use_shuffle=True,
        global_kernel_size=11,
        recursive=2,
        lr_space="exp",
        topk=1,
    ),
    "seemore-l": dict(
        num_experts=3,
        num_layers=16,
        embedding_dim=48,
        img_range=1.0,
        use_shuffle=False,
        global_kernel_size=11,
        recursive=1,
        lr_space="exp",
        topk=1,
    ),
}
