"""SeemoRe's fused CPU inference path (fp32, and bf16 under autocast) against its reference, and where
it must not run.

Tolerance: the fast path changes only the order of float32 roundings (oneDNN's accumulation order, the
LayerNorm's variance, folded scales). With the shipped checkpoints (outputs in about [0, 1]) the max abs
difference from the reference is at most ``TOL`` = 1e-5; with the test weights of tests/test_seemore.py,
whose outputs reach |5|, at most ``REL_TOL`` = 1e-5 times the largest |output| (measured: <= 3.6e-6 for
T/B/L at x2/x3/x4).

In bf16 both paths round to bfloat16 at different places (the reference between every op, the fast
path after each fused oneDNN call), so they are compared through fp32: the fast path's max abs error
from the fp32 reference is at most ``BF16_FACTOR`` = 1.5 times autocast's reference's own (measured on
this file's cases: 0.63-1.16 times), with the same experts chosen, and on the shipped weights its uint8
output stays within the precision gate's 45 dB of fp32's (measured: 52.5-52.8 dB).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sisr.models.seemore as seemore_module
from sisr.checkpoint import load_model
from sisr.models import _fused
from sisr.models._fastpath import _onednn_bf16, reference_paths
from sisr.models.seemore import VARIANTS, SeemoRe
from test_seemore import SCALES, build, record_routes, sample_images

TOL = 1e-5
REL_TOL = 1e-5
BF16_FACTOR = 1.5

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not _fused.fused_convs_available(), reason="torch built without oneDNN"),
]


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the fused ops the SeemoRe module calls, in order."""
    calls: list[str] = []
    for name in ("conv2d", "conv2d_binary", "layer_norm_channels"):
        original = getattr(seemore_module, name)

        def spy(*args: object, _original: object = original, _name: str = name, **kwargs: object) -> object:
            calls.append(_name)
            return _original(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(seemore_module, name, spy)
    return calls


def _size(variant: str) -> tuple[int, int]:
    # Odd, non-square; at least 4 ** recursive per side.
    return (17, 23) if VARIANTS[variant]["recursive"] == 2 else (13, 9)


# ---------------------------------------------------------------------------------------------------
# The fused ops against their references
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_ops_match_their_references(channels_last: bool) -> None:
    g = torch.Generator().manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 6, 9, 11, generator=g).contiguous(memory_format=layout)
    convs = [
        nn.Conv2d(6, 8, kernel_size=1),
        nn.Conv2d(6, 8, kernel_size=3, padding=1, bias=False),
        nn.Conv2d(6, 6, kernel_size=(1, 5), padding=(0, 2), groups=6),
        nn.Conv2d(6, 6, kernel_size=4, stride=4, groups=6),
    ]
    with torch.inference_mode():
        for conv in convs:
            ref = conv(x)
            other = torch.randn(ref.shape, generator=g).contiguous(memory_format=layout)
            assert (_fused.conv2d(conv, x) - ref).abs().max() <= 1e-5
            assert (_fused.conv2d(conv, x, unary="gelu") - F.gelu(ref)).abs().max() <= 1e-5
            got = _fused.conv2d_binary(conv, x, other, binary="mul")
            assert (got - ref * other).abs().max() <= 1e-5
            got = _fused.conv2d_binary(conv, x, other, binary="add")
            assert (got - (ref + other)).abs().max() <= 1e-5
            out = other.clone()
            assert _fused.conv2d_add_(out, conv, x) is out
            assert (out - (other + ref)).abs().max() <= 1e-5
        conv = convs[0]  # weight override: the second output half only
        got = _fused.conv2d(conv, x, weight=conv.weight[4:], bias=conv.bias[4:])
        assert (got - conv(x)[:, 4:]).abs().max() <= 1e-5
        weight, bias = torch.rand(6, generator=g), torch.randn(6, generator=g)
        ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), weight, bias, 1e-6).permute(0, 3, 1, 2)
        got = _fused.layer_norm_channels(x, weight, bias, 1e-6)
        assert got.shape == x.shape and (got - ref).abs().max() <= 1e-5


# ---------------------------------------------------------------------------------------------------
# The network: fast path against reference
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_path_matches_reference(variant: str, scale: int, fused_calls: list[str]) -> None:
    model = build(variant, scale).eval()
    h, w = _size(variant)
    # Batch 2 (noise and stripes, which route differently for every variant and scale here) and batch 1
    # (the folded-scale expert path).
    for x in (sample_images(4, h, w)[[0, 3]], sample_images(1, h, w)):
        for layout in (torch.contiguous_format, torch.channels_last):
            xl = x.contiguous(memory_format=layout)
            with torch.inference_mode():
                fused_calls.clear()
                with record_routes(model, topk=1) as fast_routes:
                    fast = model(xl)
                assert "conv2d" in fused_calls and "layer_norm_channels" in fused_calls
                fused_calls.clear()
                with reference_paths(), record_routes(model, topk=1) as ref_routes:
                    ref = model(xl)
                assert fused_calls == []
            assert fast.shape == ref.shape == (x.shape[0], 3, scale * h, scale * w)
            assert (fast - ref).abs().max().item() <= REL_TOL * ref.abs().max().item()
            # Same per-image routes, and the output in the reference's layout.
            assert torch.equal(torch.stack(fast_routes), torch.stack(ref_routes))
            assert fast.is_contiguous() == ref.is_contiguous()
            assert fast.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(
                memory_format=torch.channels_last
            )
            if x.shape[0] == 2 and layout == torch.contiguous_format:
                # The two images take different experts in at least one layer.
                assert any(len(set(layer[:, 0].tolist())) > 1 for layer in fast_routes)


@pytest.mark.parametrize("scale", SCALES)
def test_fast_path_matches_reference_on_shipped_weights(scale: int) -> None:
    model = load_model(f"seemore-t-x{scale}").eval()
    x = sample_images(4, 17, 23)
    with torch.inference_mode():
        fast = model(x)
        with reference_paths():
            ref = model(x)
    assert (fast - ref).abs().max().item() <= TOL


def test_no_grad_uses_the_fast_path_too(fused_calls: list[str]) -> None:
    model = build("seemore-t", 2).eval()
    x = sample_images(1, 17, 23)
    with torch.no_grad():
        fast = model(x)
    assert fused_calls
    with torch.no_grad(), reference_paths():
        assert (fast - model(x)).abs().max().item() <= TOL


# ---------------------------------------------------------------------------------------------------
# bf16: the same fast path under CPU autocast to bfloat16
# ---------------------------------------------------------------------------------------------------

needs_bf16 = pytest.mark.skipif(not _onednn_bf16(), reason="oneDNN has no bfloat16 kernels on this CPU")


@pytest.fixture
def conv_dtypes(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """The dtypes of the inputs of the fused convolutions that the SeemoRe module calls, in order."""
    dtypes: list[torch.dtype] = []
    for name in ("conv2d", "conv2d_binary"):
        original = getattr(seemore_module, name)

        def spy(
            conv: nn.Conv2d, x: torch.Tensor, *args: object, _original: object = original, **kw: object
        ) -> object:
            dtypes.append(x.dtype)
            return _original(conv, x, *args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(seemore_module, name, spy)
    return dtypes


def _bf16_against_fp32(model: SeemoRe, x: torch.Tensor) -> tuple[torch.Tensor, float, float, bool]:
    """The fast bf16 output, its and autocast's reference's max abs error from fp32, and same routes."""
    with torch.inference_mode():
        with record_routes(model, topk=1) as fast_routes, torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x)
        with reference_paths(), record_routes(model, topk=1) as ref_routes:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                ref = model(x)
        with reference_paths():
            fp32 = model(x)
    same = torch.equal(torch.stack(fast_routes), torch.stack(ref_routes))
    return fast, (fast - fp32).abs().max().item(), (ref - fp32).abs().max().item(), same


@needs_bf16
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_fast_path_is_as_close_to_fp32_as_autocast(
    variant: str, scale: int, conv_dtypes: list[torch.dtype]
) -> None:
    model = build(variant, scale).eval()
    h, w = _size(variant)
    x = sample_images(4, h, w)[[0, 3]]  # two images that route differently
    fast, fast_err, ref_err, same_routes = _bf16_against_fp32(model, x)
    assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}  # it ran, and in bfloat16
    assert fast.dtype == torch.float32 and fast.shape == (2, 3, scale * h, scale * w)
    assert same_routes
    assert 0 < fast_err <= BF16_FACTOR * ref_err


@needs_bf16
@pytest.mark.parametrize("scale", SCALES)
def test_bf16_fast_path_on_shipped_weights_passes_the_gate(scale: int) -> None:
    model = load_model(f"seemore-t-x{scale}").eval()
    x = sample_images(4, 17, 23)
    fast, fast_err, ref_err, same_routes = _bf16_against_fp32(model, x)
    assert same_routes and fast_err <= BF16_FACTOR * ref_err
    with torch.inference_mode(), reference_paths():
        fp32 = model(x)
    as_uint8 = [(t.clamp(0, 1) * 255).round() for t in (fast, fp32)]
    mse = F.mse_loss(*as_uint8).item()
    assert 10 * torch.log10(torch.tensor(255.0**2 / mse)).item() >= 45.0


@needs_bf16
def test_a_bf16_model_on_bf16_input_takes_the_fast_path(conv_dtypes: list[torch.dtype]) -> None:
    model = build("seemore-t", 2).eval().bfloat16()
    x = sample_images(1, 17, 23)
    with torch.inference_mode():
        fast = model(x.bfloat16())
        assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}
        with reference_paths():
            ref = model.float()(x)
    assert fast.dtype == torch.bfloat16
    assert (fast.float() - ref).abs().max().item() <= 0.1 * ref.abs().max().item()


# ---------------------------------------------------------------------------------------------------
# Where the reference must run
# ---------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch.backends.mkldnn.flags() warns on CPU builds
def test_reference_runs_outside_fp32_cpu_inference(
    fused_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build("seemore-t", 2).eval()
    x = sample_images(1, 17, 23)
    with torch.enable_grad():  # autograd on (training, LAM's input gradients)
        y = model(x.requires_grad_(True))
        y.sum().backward()
    assert x.grad is not None and fused_calls == []
    x = x.detach()
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.float16):  # the fast path computes in float32 or bfloat16
            model(x)
        assert fused_calls == []
        model.double()(x.double())  # not float32
        model.float()
        assert fused_calls == []
        with torch.backends.mkldnn.flags(enabled=False):
            model(x)
        assert fused_calls == []
        with monkeypatch.context() as m:  # as torch.onnx.export sets it
            m.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
            model(x)
        assert fused_calls == []
        with monkeypatch.context() as m:  # a torch build without oneDNN
            m.setattr(torch.backends.mkldnn, "is_available", lambda: False)
            model(x)
        assert fused_calls == []
        model(x)
    assert fused_calls  # and back on afterwards


def test_training_mode_runs_the_reference(fused_calls: list[str]) -> None:
    model = build("seemore-t", 2).train()
    with torch.no_grad():
        model(sample_images(2, 17, 23))
    assert fused_calls == []


def test_new_weights_after_a_forward_give_the_new_output() -> None:
    model = build("seemore-t", 3).eval()
    x = sample_images(2, 17, 23)[[0, 1]]
    with torch.inference_mode():
        before = model(x)
    fresh = SeemoRe(scale=3, **VARIANTS["seemore-t"]).eval()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.load_state_dict(fresh.state_dict(), strict=True)
    with torch.inference_mode():
        after = model(x)
        with reference_paths():
            expected = fresh(x)
    assert (after - before).abs().max().item() > 1e-2
    assert (after - expected).abs().max().item() <= TOL
