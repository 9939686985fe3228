"""SeemoRe: parity with the official code, per-image routing in batched evaluation, invariants.

The parity fixtures (tests/fixtures/seemore_*.pt, see tests/fixtures/README.md) hold a digest of the
official module's key names and shapes, inputs, the official routes and outputs, for weights that
:func:`parity_state_dict` rebuilds from the key names, shapes and a seed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from _weights import canonical_state_dict, perturbed_state_dict
from sisr.errors import SisrError
from sisr.models.seemore import VARIANTS, MoELayer, SeemoRe

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"
SCALES = (2, 3, 4)
WEIGHT_NOISE = 0.05
# Matrix weights are rescaled to std GAIN / sqrt(fan_in): with plain N(0, 0.05^2) noise the depthwise
# convolutions shrink the image-dependent signal so much that the router's choice is set by the biases
# alone and every input picks the same experts.
WEIGHT_GAIN = 1.0
SEED = 1

# From the official code (eduardzamfir/seemoredetails, basicsr/archs/seemore_arch.py). T (x2/x3/x4),
# B (x2/x4) and L (x2/x4) are the counts the paper reports; B and L at x3 were counted on the official module.
OFFICIAL_PARAMS = {
    ("seemore-t", 2): 220_104,
    ("seemore-t", 3): 224_979,
    ("seemore-t", 4): 231_804,
    ("seemore-b", 2): 490_364,
    ("seemore-b", 3): 496_859,
    ("seemore-b", 4): 505_952,
    ("seemore-l", 2): 953_308,
    ("seemore-l", 3): 959_803,
    ("seemore-l", 4): 968_896,
}

# T at every scale, B and L at two (x3 only changes the upsampler's width), the official constructor
# defaults (with lr_space="linear", topk=2) and a small config with the remaining options.
PARITY_CASES = ["t_x2", "t_x3", "t_x4", "b_x2", "b_x4", "l_x2", "l_x4", "default_x2", "custom_x3"]


def parity_state_dict(reference: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic weights with the keys and shapes of `reference` (values of `reference` unused).

    :func:`canonical_state_dict` then :func:`perturbed_state_dict` with noise ``WEIGHT_NOISE``; then
    every tensor with two or more dimensions (conv and linear weights, whose canonical value is zero)
    is divided by ``WEIGHT_NOISE * sqrt(fan_in) / WEIGHT_GAIN``, i.e. becomes N(0, GAIN^2 / fan_in).
    The fixture generator calls this same function on the official module's state dict.
    """
    out = perturbed_state_dict(canonical_state_dict(reference), seed=seed, scale=WEIGHT_NOISE)
    for key, t in out.items():
        if t.ndim >= 2:
            out[key] = t * (WEIGHT_GAIN / (WEIGHT_NOISE * math.sqrt(t[0].numel())))
    return out


def key_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the sorted ``name:shape`` lines of a state dict (the fixture stores the official one)."""
    lines = sorted(f"{k}:{list(v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def sample_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """`n` (<= 4) different deterministic (3, h, w) images in [0, 1]: noise, ramps, flat, stripes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    images = [
        torch.rand(3, h, w, generator=g),
        torch.stack([xx, yy, 1 - xx]),
        torch.full((3, h, w), 0.9),
        (torch.sin(12 * xx + 5 * yy) * 0.5 + 0.5) * torch.tensor([1.0, 0.2, 0.5])[:, None, None],
    ]
    return torch.stack(images[:n])


@contextmanager
def record_routes(model: torch.nn.Module, topk: int) -> Iterator[list[torch.Tensor]]:
    """Collects, per mixture layer and in call order, the (B, topk) experts the router selects."""
    routes: list[torch.Tensor] = []

    def hook(_mod: torch.nn.Module, _inp: Any, logits: torch.Tensor) -> None:
        routes.append(logits.softmax(dim=1).topk(topk, dim=1).indices)

    moe_layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    handles = [m.gate.register_forward_hook(hook) for m in moe_layers]
    try:
        yield routes
    finally:
        for handle in handles:
            handle.remove()


@functools.cache
def _variant_weights(variant: str, scale: int) -> dict[str, torch.Tensor]:
    model = SeemoRe(scale=scale, **VARIANTS[variant])
    return parity_state_dict(model.state_dict(), seed=SEED)


def build(variant: str, scale: int) -> SeemoRe:
    model = SeemoRe(scale=scale, **VARIANTS[variant])
    model.load_state_dict(_variant_weights(variant, scale), strict=True)
    return model


def _size(variant: str) -> tuple[int, int]:
    # Smallest-ish odd, non-square size the key calibration accepts (>= 4 ** recursive per side).
    return (17, 19) if VARIANTS[variant]["recursive"] == 2 else (13, 9)


# ---------------------------------------------------------------------------------------------------
# Parity with the official implementation
# ---------------------------------------------------------------------------------------------------


@functools.cache
def _load_fixture(case: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"seemore_{case}.pt", weights_only=True)


def _parity_model(case: str) -> tuple[SeemoRe, dict[str, Any]]:
    fx = _load_fixture(case)
    model = SeemoRe(**fx["config"])
    ours = model.state_dict()
    # Same names and shapes as the official module, so the same weights are drawn for the same keys.
    assert len(ours) == fx["num_keys"] and key_digest(ours) == fx["key_digest"]
    model.load_state_dict(parity_state_dict(ours, seed=fx["seed"]), strict=True)
    return model, fx


@pytest.mark.parametrize("case", PARITY_CASES)
def test_parity_eval(case: str) -> None:
    model, fx = _parity_model(case)
    model.eval()
    x, expected, official_routes = fx["input"], fx["eval_output"], fx["eval_routes"]
    topk = fx["config"]["topk"]
    # The fixture's images take different routes somewhere, so routing is exercised.
    assert any(len({tuple(r) for r in layer.tolist()}) > 1 for layer in official_routes)
    with torch.no_grad():
        for i in range(x.shape[0]):  # one image at a time, the official code's only working eval case
            with record_routes(model, topk) as routes:
                out = model(x[i : i + 1])
            assert torch.equal(torch.cat(routes), official_routes[:, i])
            assert (out - expected[i : i + 1]).abs().max().item() <= 1e-4
        with record_routes(model, topk) as routes:  # the whole batch at once, each image on its own route
            out = model(x)
    assert torch.equal(torch.stack(routes), official_routes)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("case", PARITY_CASES)
def test_parity_train(case: str) -> None:
    model, fx = _parity_model(case)
    model.train()
    expected = fx["train_output"]
    with torch.no_grad():
        out = model(fx["input"][: expected.shape[0]])  # dense experts on a batch
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-4


# ---------------------------------------------------------------------------------------------------
# Invariants of the released variants
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_param_count(variant: str, scale: int) -> None:
    model = SeemoRe(scale=scale, **VARIANTS[variant])
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[(variant, scale)]
    assert "mean" not in model.state_dict()  # non-persistent buffer, official keys only


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_eval_routes_each_image(variant: str, scale: int) -> None:
    # float64, so that the comparison sees routing mistakes rather than float32 rounding, which the
    # 6-16 layers amplify to ~1e-5 between batch sizes.
    model = build(variant, scale).eval().double()
    h, w = _size(variant)
    x = sample_images(4, h, w).double()
    calls: list[int] = []
    handles = [
        expert.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
        for m in model.modules()
        if isinstance(m, MoELayer)
        for expert in m.experts
    ]
    with torch.no_grad(), record_routes(model, topk=1) as routes:
        batched = model(x)
    for handle in handles:
        handle.remove()
    assert batched.shape == (4, 3, scale * h, scale * w)
    assert torch.isfinite(batched).all()
    # Different images pick different experts in at least one layer ...
    assert any(len(set(layer[:, 0].tolist())) > 1 for layer in routes)
    # ... and each expert runs only on the images that chose it: topk * B image-passes per layer.
    assert sum(calls) == len(routes) * 4 * 1
    with torch.no_grad():
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    assert (batched - single).abs().max().item() <= 1e-9


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backward(variant: str, scale: int) -> None:
    model = build(variant, scale)
    h, w = _size(variant)
    for training in (True, False):
        model.train(training)
        model.zero_grad(set_to_none=True)
        x = sample_images(2, h, w).requires_grad_(True)
        model(x).square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        grads = {n: p.grad for n, p in model.named_parameters()}
        if training:  # dense: every parameter, every expert included, gets a gradient
            assert all(g is not None for g in grads.values())
        else:  # sparse: only the chosen experts are in the graph
            assert any(g is None for n, g in grads.items() if ".experts." in n)
        assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_round_trip(variant: str, scale: int) -> None:
    model = build(variant, scale).eval()
    x = sample_images(2, *_size(variant))
    with torch.no_grad():
        expected = model(x)

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    via_torch = SeemoRe(scale=scale, **VARIANTS[variant]).eval()
    via_torch.load_state_dict(torch.load(buf, weights_only=True), strict=True)

    blob = safetensors.torch.save(model.state_dict())
    via_safetensors = SeemoRe(scale=scale, **VARIANTS[variant]).eval()
    via_safetensors.load_state_dict(safetensors.torch.load(blob), strict=True)

    with torch.no_grad():
        assert torch.equal(via_torch(x), expected)
        assert torch.equal(via_safetensors(x), expected)


def test_train_mode_runs_every_expert_densely() -> None:
    model = build("seemore-t", 2).train()
    calls: list[int] = []
    for m in model.modules():
        if isinstance(m, MoELayer):
            for expert in m.experts:
                expert.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    model(sample_images(3, 17, 19))
    assert calls == [3] * (6 * 3)  # 6 layers x 3 experts, each on the whole batch


def test_float64_and_mean_buffer_follow_to() -> None:
    model = build("seemore-l", 2).eval()
    x = sample_images(1, 13, 9)
    with torch.no_grad():
        ref = model(x)
        out = model.to(torch.float64)(x.double())
    assert model.mean.dtype == torch.float64 and out.dtype == torch.float64
    assert (out.float() - ref).abs().max().item() <= 1e-4


def test_rejects_bad_input_and_options() -> None:
    model = SeemoRe(scale=2, **VARIANTS["seemore-t"]).eval()
    with pytest.raises(SisrError, match="at least 16x16"):
        model(torch.rand(1, 3, 15, 40))
    with pytest.raises(ValueError, match="lr_space"):
        SeemoRe(lr_space="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="topk"):
        SeemoRe(num_experts=2, topk=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_experts": 2, "topk": 3}, "topk 3 must be between 1 and num_experts (2)"),
        ({"num_experts": 0}, "num_experts 0 must be at least 1"),
        ({"embedding_dim": -1}, "embedding_dim -1 must be at least 1"),
        ({"num_layers": 0}, "num_layers 0 must be at least 1"),
        ({"global_kernel_size": 0}, "global_kernel_size 0 must be at least 1"),
        ({"global_kernel_size": 4}, "global_kernel_size 4 must be odd (1, 3, 5, ...)"),
        ({"recursive": -1}, "recursive -1 must be at least 0"),
        ({"scale": 0}, "scale 0 must be at least 1"),
        ({"scale": 2.5}, "scale must be an integer, got 2.5"),
        ({"in_chans": 4}, "in_chans 4 is not supported"),
        ({"img_range": 0}, "img_range 0 must be a positive finite number"),
        ({"img_range": float("nan")}, "img_range nan must be a positive finite number"),
    ],
)
def test_rejects_out_of_range_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SeemoRe(**{**VARIANTS["seemore-t"], "scale": 2, **kwargs})


def test_edge_values_that_the_official_code_runs() -> None:
    # recursive 0 (context at full resolution), kernel size 1, a single expert, scale 1: valid.
    model = SeemoRe(
        scale=1, num_experts=1, topk=1, num_layers=1, embedding_dim=4, global_kernel_size=1, recursive=0
    ).eval()
    assert model.min_size == 1
    with torch.no_grad():
        out = model(torch.rand(2, 3, 3, 5))
    assert out.shape == (2, 3, 3, 5) and torch.isfinite(out).all()
