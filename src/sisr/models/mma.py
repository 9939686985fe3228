"""MMA: "Activating Wider Areas in Image Super-Resolution" (Cheng et al., arXiv 2403.08330).

A residual stack of MetaFormer-style blocks. Each block mixes tokens with the sum of a bidirectional
Mamba (the "bimamba v2" of Vision Mamba, Zhu et al., arXiv 2401.09417) over the raster-scanned image and
an RCAN-style channel attention branch, followed by a gated depthwise-conv feed-forward network.
Module and parameter names follow the official code (ArsenalCheng/MMA) so that its checkpoints load with
``strict=True``.

Fast path (float32 CPU inference, where :func:`sisr.models._fastpath.fast_path_allowed` says so): the
same layers, in other spellings that agree with the reference within float rounding.

- The feature maps are channels_last end to end, so oneDNN runs every convolution in its fastest layout,
  LayerNorm2d reads its (B, H, W, C) view in place, and the Mamba tokens are that view too.
- The Mamba mixer works in the scan's (B, channels, L) layout: every projection is one matrix product per
  batch element whose output is already in the layout its consumer reads (BLAS takes the transposed
  operands in place), so no (B, L, C) <-> (B, C, L) copy surrounds the scan.
- The FFN runs ``project_in`` as one matrix product per image that writes channel-major planes, then
  the depthwise conv, GELU and gate in one pass of the compiled kernel (:func:`sisr.ops.gated_dwconv3x3`),
  and ``project_out`` reads that result transposed in place into the channels-last map; CAB's first
  conv fuses its GELU.
- The upsampler's convs write their channels in pixel-shuffle order, which makes the shuffle a copy
  of contiguous runs.

Under CPU autocast to bf16 (``--precision bf16``), on a CPU where oneDNN has bf16 kernels, MMA runs the
same fast path with autocast turned off, its features in float32, and only its matrix products (the
Mamba mixer's projections and the FFN's ``project_in``/``project_out``, most of its time) in bf16: their
operands are rounded to bf16 as autocast would, the products accumulate in float32 and return float32.
The convolutions, the norms, the gate kernel and the scan stay float32, where autocast's reference
would round them too.

Nothing is cached: every call reads the current weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sisr.models._checks import check_int, check_positive, check_rgb
from sisr.models._fastpath import fast_path_allowed, fast_path_dtype
from sisr.models._fused import conv2d, conv_shuffle_conv, fused_convs_available
from sisr.models._pointwise import PointwiseConv2d
from sisr.ops import (
    ScanInputs,
    conv1d_silu,
    conv1d_silu_ref,
    gated_dwconv3x3,
    selective_scan_bidirectional,
)

__all__ = ["MMA", "VARIANTS"]


def _fast(x: Tensor) -> bool:
    """Whether the oneDNN fast path runs for `x` (see the module docstring)."""
    return fast_path_allowed(x) and fused_convs_available()


def _fast_bf16(x: Tensor) -> bool:
    """Whether the fast path runs for float32 `x` with its matrix products in bf16 (CPU autocast to bf16)."""
    return x.dtype == torch.float32 and fast_path_dtype(x) == torch.bfloat16 and fused_convs_available()


# The dtype of the fast path's matrix products: None (float32) or torch.bfloat16 (see the docstring).
_PRODUCTS: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar("mma_products", default=None)


@contextlib.contextmanager
def _bf16_products() -> Iterator[None]:
    """Autocast off, and the fast path's matrix products in bf16, within this block."""
    token = _PRODUCTS.set(torch.bfloat16)
    try:
        with torch.autocast("cpu", enabled=False):
            yield
    finally:
        _PRODUCTS.reset(token)


def _operand(t: Tensor) -> Tensor:
    """`t` in the products' dtype (itself in float32)."""
    dtype = _PRODUCTS.get()
    return t if dtype is None else t.to(dtype)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for matrices, as a new float32 tensor (in bf16 under :func:`_bf16_products`)."""
    return torch.mm(_operand(a), _operand(b)).float()


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` with one of them a matrix and the other a batch (B, m, n), as a new contiguous tensor.

    One ``mm`` per batch element: BLAS reads a transposed (column-major) operand in place, where
    ``torch.matmul`` would copy a batch of them first. float32 out (bf16 operands under
    :func:`_bf16_products`).
    """
    batch = (a if a.dim() == 3 else b).shape[0]
    a, b = _operand(a), _operand(b)
    out = a.new_empty(batch, a.shape[-2], b.shape[-1])
    for i in range(batch):
        torch.mm(a[i] if a.dim() == 3 else a, b[i] if b.dim() == 3 else b, out=out[i])
    return out.float()


def _linear(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` by oneDNN (``mkldnn._linear_pointwise``), with one of them a matrix and the other a
    batch (B, m, k) or (B, n, k), as a new contiguous float32 (B, m, n) tensor (bf16 operands under
    :func:`_bf16_products`).

    For the thin products of the Mamba mixer (48-384 channels against thousands of positions) oneDNN
    was faster than MKL's sgemm on the same operands on an AVX2 AMD EPYC (ad-hoc comparisons; the
    whole path is timed by ``benchmarks/latency.py``).
    """
    batch = (a if a.dim() == 3 else b).shape[0]
    a, b = _operand(a), _operand(b)
    rows = [
        torch.ops.mkldnn._linear_pointwise(
            a[i] if a.dim() == 3 else a, b[i] if b.dim() == 3 else b, None, "none", [], ""
        )
        for i in range(batch)
    ]
    return (torch.stack(rows) if batch > 1 else rows[0].unsqueeze(0)).float()


def _affine(a: Tensor, b: Tensor, bias: Tensor | None, *, out: Tensor) -> Tensor:
    """``a @ b + bias`` (`bias` broadcast over the rows) by BLAS, into float32 `out`."""
    if _PRODUCTS.get() is not None:  # a product in the products' dtype, then rounded into `out`
        product = _mm(a, b)
        return out.copy_(product if bias is None else product.add_(bias))
    if bias is None:
        return torch.mm(a, b, out=out)
    return torch.addmm(bias, a, b, out=out)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention as in RCAN."""

    def __init__(self, *, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        # Index layout (pool, conv, relu, conv, sigmoid) gives the official keys attention.1/.3.
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)  # (B, C, H, W) * (B, C, 1, 1)


class CAB(nn.Module):
    """Channel attention block: conv, GELU, conv, channel attention (keys ``cab.0``, ``cab.2``, ``cab.3``)."""

    def __init__(self, *, num_feat: int, compress_ratio: int = 4, squeeze_factor: int = 30) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat=num_feat, squeeze_factor=squeeze_factor),
        )

    def forward(self, x: Tensor) -> Tensor:
        if _fast(x):  # the first conv with its GELU fused
            conv_in, _, conv_out, attention = self.cab
            return attention(conv_out(conv2d(conv_in, x, unary="gelu")))
        return self.cab(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, held in ``body`` as in the official code."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FeedForward(nn.Module):
    """Gated depthwise-conv feed-forward network (GDFN of Restormer)."""

    def __init__(self, *, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = True) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = PointwiseConv2d(dim, hidden * 2, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=bias)
        self.project_out = PointwiseConv2d(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if _fast(x):
            # Per image: project_in as one product written channel-major, (2 hidden, H*W), so that the
            # kernel reads each channel's plane contiguously (and adds project_in's bias as it reads);
            # project_out reads the kernel's (hidden, H*W) result transposed in place and writes
            # (H*W, C), the channels-last map.
            batch, channels, height, width = x.shape
            w_in = self.project_in.weight.view(-1, channels)
            w_out = self.project_out.weight.view(channels, -1)
            b_in, b_out = self.project_in.bias, self.project_out.bias
            out = x.new_empty(batch, height, width, channels)
            for i in range(batch):
                tokens = x[i].permute(1, 2, 0).reshape(height * width, channels)  # a view if channels-last
                hidden = _mm(w_in, tokens.t()).view(1, -1, height, width)
                gated = gated_dwconv3x3(hidden, self.dwconv.weight, self.dwconv.bias, input_bias=b_in)
                _affine(gated.view(-1, height * width).t(), w_out.t(), b_out, out=out[i].view(-1, channels))
            return out.permute(0, 3, 1, 2)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class BiMamba(nn.Module):
    """Bidirectional Mamba mixer (Vim's ``Mamba`` with ``bimamba_type="v2"``, ``if_divide_out=False``).

    The sequence is scanned forwards with ``conv1d``/``x_proj``/``dt_proj``/``A_log``/``D`` and backwards
    with the ``*_b`` parameters; both directions share ``in_proj`` and ``out_proj`` and their outputs are
    summed before ``out_proj``.
    """

    def __init__(self, *, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        d_inner, dt_rank = self.d_inner, self.dt_rank
        # Initial values follow mamba_ssm, so that the module also trains from scratch.
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        # Forward direction.
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.A_log = nn.Parameter(a_log.clone())
        self.D = nn.Parameter(torch.ones(d_inner))
        # Backward direction.
        self.A_b_log = nn.Parameter(a_log.clone())
        self.conv1d_b = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj_b = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj_b = nn.Linear(dt_rank, d_inner)
        self.D_b = nn.Parameter(torch.ones(d_inner))

        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self._init_dt(self.dt_proj)
        self._init_dt(self.dt_proj_b)

    def _init_dt(self, dt_proj: nn.Linear, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        # softplus(bias) log-uniform in [dt_min, dt_max], as in mamba_ssm.
        std = self.dt_rank**-0.5
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        with torch.no_grad():
            dt_proj.weight.uniform_(-std, std)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def _ssm_inputs(
        self, u: Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, A_log: Tensor, D: Tensor
    ) -> ScanInputs:
        """The input-dependent (delta, B, C) of one direction, from its conv output ``u`` (B, d_inner, L).

        delta is (B, d_inner, L) without its bias (``dt_proj.bias`` enters the scan as delta_bias);
        B and C are (B, d_state, L).
        """
        if _fast(u):  # every product in the scan's (B, channels, L) layout, contiguous
            x_dbl = _linear(x_proj.weight, u.transpose(1, 2))  # (B, dt_rank + 2 * d_state, L)
            dt, b, c = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=1)
            delta = _matmul(dt_proj.weight, dt)
            return ScanInputs(u, delta, -torch.exp(A_log), b, c, D, dt_proj.bias)
        x_dbl = x_proj(u.transpose(1, 2))  # (B, L, dt_rank + 2 * d_state)
        dt, b, c = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)
        return ScanInputs(u, delta, -torch.exp(A_log), b.transpose(1, 2), c.transpose(1, 2), D, dt_proj.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """Mixes (B, L, d_model) tokens; returns the same shape."""
        fast = _fast(tokens)
        if fast:  # x and z as two products in the scan's layout, each contiguous (B, d_inner, L)
            w_in = self.in_proj.weight
            x = _linear(w_in[: self.d_inner], tokens)
            z = _linear(w_in[self.d_inner :], tokens)
        else:
            xz = self.in_proj(tokens).transpose(1, 2)  # (B, 2 * d_inner, L)
            x, z = xz.chunk(2, dim=1)
        # Forward direction: causal depthwise conv (Vim pads k-1 on both sides and keeps the first L).
        # Backward direction: Vim runs conv1d_b on the reversed sequence and reverses the scan's output
        # back; without any flip, that is an anti-causal conv (right padding, reversed kernel) on x and
        # a scan from the last position to the first, which is what the bidirectional op does. The fast
        # path runs both convs with their SiLU in one pass each (the compiled kernel).
        conv_silu = conv1d_silu if fast else conv1d_silu_ref
        u = conv_silu(x, self.conv1d.weight, self.conv1d.bias)
        u_b = conv_silu(x, self.conv1d_b.weight.flip(-1), self.conv1d_b.bias, anticausal=True)
        forward = self._ssm_inputs(u, self.x_proj, self.dt_proj, self.A_log, self.D)
        backward = self._ssm_inputs(u_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b)
        # (y_f + y_b) * silu(z): both directions gated by the same z, as in Vim.
        y = selective_scan_bidirectional(forward, backward, z, delta_softplus=True)  # (B, d_inner, L)
        if fast:  # (B, L, d_model) straight from the (B, d_inner, L) output
            return _matmul(y.transpose(1, 2), self.out_proj.weight.t())
        return self.out_proj(y.transpose(1, 2))  # (B, L, d_model)


class MambaLayer(nn.Module):
    """Runs :class:`BiMamba` over the raster-scanned pixels of a (B, C, H, W) map."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.mamba = BiMamba(d_model=dim, d_state=16, d_conv=4, expand=2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C), row-major pixel order
        return self.mamba(tokens).transpose(1, 2).reshape(b, c, h, w)


class HybridAttBlock(nn.Module):
    """Sum of the Mamba branch and the channel attention branch."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.mamba = MambaLayer(dim=dim)
        self.channel_attention = CAB(num_feat=dim, compress_ratio=4, squeeze_factor=30)

    def forward(self, x: Tensor) -> Tensor:
        return self.mamba(x) + self.channel_attention(x)


class MLPMixer(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``."""

    def __init__(self, *, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = True) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = HybridAttBlock(dim=dim)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = FeedForward(dim=dim, ffn_expansion_factor=ffn_expansion_factor, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _check_upscale(scale: int) -> None:
    """BasicSR's ``Upsample`` takes powers of two and 3 (and raises ValueError for the rest, as here)."""
    check_int("upscale", scale, low=2)
    if not (scale == 3 or scale & (scale - 1) == 0):
        raise ValueError(f"upscale {scale} is not supported; use a power of two (2, 4, 8, ...) or 3")


class Upsample(nn.Sequential):
    """Conv + PixelShuffle upsampler of BasicSR, for scales 2^n and 3."""

    def __init__(self, *, scale: int, num_feat: int) -> None:
        _check_upscale(scale)
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            for _ in range(int(scale).bit_length() - 1):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        super().__init__(*layers)

    def forward_with_last(self, x: Tensor, last: nn.Conv2d) -> Tensor:
        """``last(self(x))`` on the fast path: the last (conv, shuffle) pair and `last` are linear, so
        they run as one 5x5 convolution of the low-resolution features into `last`'s sub-pixel phases
        (:func:`sisr.models._fused.conv_shuffle_conv`), then a shuffle of its 3 channels. The outermost
        output row and column on each side, where `last`'s zero padding differs, are recomputed by the
        plain chain on 2-pixel strips of the input. (Plain calls, ``self(x)``, run the reference.)"""
        layers = list(self)  # (conv, pixel shuffle) pairs
        for conv, shuffle in zip(layers[:-2:2], layers[1:-2:2], strict=True):
            x = _conv_pixel_shuffle(conv, x, shuffle.upscale_factor)
        up, r = layers[-2], layers[-1].upscale_factor
        weight, bias = conv_shuffle_conv(up, last, r)
        phases = torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, [2, 2], [1, 1], [1, 1], 1, "none", [], ""
        )
        out = F.pixel_shuffle(phases, r)  # (B, out, r H, r W)

        def chain(strip: Tensor) -> Tensor:
            return last(F.pixel_shuffle(up(strip), r))

        out[..., :1, :] = chain(x[..., :2, :])[..., :1, :]
        out[..., -1:, :] = chain(x[..., -2:, :])[..., -1:, :]
        out[..., :, :1] = chain(x[..., :, :2])[..., :, :1]
        out[..., :, -1:] = chain(x[..., :, -2:])[..., :, -1:]
        return out


def _conv_pixel_shuffle(conv: nn.Conv2d, x: Tensor, r: int) -> Tensor:
    """``F.pixel_shuffle(conv(x), r)`` for a channels_last `x`, with a cheaper shuffle.

    The convolution's output channels are reordered from (c, i, j) to (i, j, c), so that its
    channels_last output holds (B, H, W, i, j, c): the shuffle to (B, H, i, W, j, c) then moves whole
    runs of r * c contiguous values, where ATen's channels_last pixel_shuffle gathers single ones.
    """
    c = conv.out_channels // (r * r)
    weight = conv.weight.unflatten(0, (c, r, r)).permute(1, 2, 0, 3, 4, 5).flatten(0, 2)
    bias = None if conv.bias is None else conv.bias.view(c, r, r).permute(1, 2, 0).flatten()
    y = conv2d(conv, x, weight=weight.contiguous(), bias=None if bias is None else bias.contiguous())
    b, _, h, w = y.shape
    cells = y.permute(0, 2, 3, 1).reshape(b, h, w, r, r * c)  # a view for a channels_last y
    out = y.new_empty(b, h, r, w, r * c)  # (B, H, i, W, (j, c)) is (B, H*r, W*r, c)
    for i in range(r):  # one copy per row phase: ATen's single 6-D permuted copy is 4x slower
        out[:, :, i].copy_(cells[:, :, :, i])
    return out.view(b, h * r, w * r, c).permute(0, 3, 1, 2)  # (B, c, H*r, W*r), channels_last


class MMA(nn.Module):
    """MMA super-resolution network.

    The defaults are the official constructor's, except ``img_range``: the official default is BasicSR's
    255, which no official option file or checkpoint uses (they all set 1).

    Args:
        num_in_ch: Channels of the input image; 3 (the RGB mean shift needs them).
        num_out_ch: Channels of the output image; 3.
        num_feat: Feature width (the Mamba ``d_model``), at least 30: the channel attention squeezes
            it 30-fold.
        num_block: Number of :class:`MLPMixer` blocks, at least 1.
        upscale: Scale factor, a power of two or 3.
        img_range: Positive factor applied to the mean-subtracted input (and undone at the output).
        rgb_mean: Mean subtracted from the input and added back to the output, 3 values.

    Raises:
        ValueError: An argument outside its range; the message names it and the range.
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        upscale: int = 4,
        img_range: float = 1.0,
        rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040),
    ) -> None:
        super().__init__()
        check_rgb("num_in_ch", num_in_ch)
        check_rgb("num_out_ch", num_out_ch)
        check_int("num_feat", num_feat, low=1)
        if num_feat < 30:  # CAB's squeeze_factor: fewer would leave its squeeze 0 channels
            raise ValueError(
                f"num_feat {num_feat} must be at least 30 (the channel attention squeezes it 30-fold)"
            )
        check_int("num_block", num_block, low=1)
        _check_upscale(upscale)
        check_positive("img_range", img_range)
        if len(rgb_mean) != 3 or not all(math.isfinite(v) for v in rgb_mean):
            raise ValueError(f"rgb_mean {list(rgb_mean)} must be 3 finite numbers")
        self.upscale = upscale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(MLPMixer(dim=num_feat) for _ in range(num_block)))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsample(scale=upscale, num_feat=num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Maps (B, C, H, W) in [0, 1] to (B, C, upscale*H, upscale*W)."""
        if _fast_bf16(x):  # CPU autocast to bf16: the fast path, its matrix products in bf16
            with _bf16_products():
                return self.forward(x)
        fast = _fast(x)
        if fast:  # channels_last features from here to the output
            x = x.contiguous(memory_format=torch.channels_last)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = x + self.conv_after_body(self.body(x))
        if fast:  # the last upsampling stage and conv_last folded into one convolution
            x = self.upsample.forward_with_last(x, self.conv_last)
        else:
            x = self.conv_last(self.upsample(x))
        x = x / self.img_range + mean
        return x.contiguous() if fast else x


# Official configuration (options/{train,test}/MMA/*.yml), and sisr's small one (the shipped mma-s-x2/x4,
# configs/shipped/mma_s_*.yml); the scale is passed separately as ``upscale``. ``img_range`` is the
# constructor's default, written out as the option files do.
VARIANTS: dict[str, dict[str, int | float]] = {
    "mma": dict(num_feat=192, num_block=24, img_range=1.0),
    "mma-s": dict(num_feat=48, num_block=6, img_range=1.0),
}
