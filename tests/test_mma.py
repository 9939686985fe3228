"""MMA: parity with the official code (fixtures), parameter counts, official key names, invariants."""

from __future__ import annotations

import inspect
import io
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from _weights import canonical_state_dict, perturbed_state_dict
from sisr.config import load_config
from sisr.models.mma import MMA, VARIANTS

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = Path(__file__).parent.parent / "configs"
SMALL = dict(num_feat=32, num_block=2, img_range=1.0)


def seeded(model: MMA, seed: int, scale: float = 0.1) -> MMA:
    weights = perturbed_state_dict(canonical_state_dict(model.state_dict()), seed=seed, scale=scale)
    model.load_state_dict(weights, strict=True)
    return model.eval()


@pytest.mark.parametrize("upscale", [2, 3, 4])
def test_matches_official_fixture(upscale):
    fixture = torch.load(FIXTURES / f"mma_x{upscale}.pt", weights_only=True)
    config = fixture["config"]
    assert config["upscale"] == upscale
    model = seeded(MMA(**config), fixture["seed"], fixture["scale"])
    with torch.no_grad():
        out = model(fixture["input"])
    assert out.shape == fixture["output"].shape
    assert (fixture["output"] - fixture["input"].mean()).abs().max() > 1.0  # the fixture is not trivial
    torch.testing.assert_close(out, fixture["output"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("upscale,expected", [(2, 19_824_627), (3, 21_484_467), (4, 21_152_499)])
def test_parameter_count_of_official_preset(upscale, expected):
    model = MMA(upscale=upscale, **VARIANTS["mma"])
    assert sum(p.numel() for p in model.parameters()) == expected


def test_official_key_names():
    keys = set(MMA(upscale=4, **SMALL).state_dict())
    block = "body.1."
    expected = {
        "conv_first.weight",
        "conv_after_body.bias",
        "upsample.0.weight",
        "upsample.2.bias",
        "conv_last.weight",
        block + "norm1.body.weight",
        block + "norm2.body.bias",
        block + "ffn.project_in.weight",
        block + "ffn.dwconv.weight",
        block + "ffn.project_out.bias",
        block + "attn.channel_attention.cab.0.weight",
        block + "attn.channel_attention.cab.2.bias",
        block + "attn.channel_attention.cab.3.attention.1.weight",
        block + "attn.channel_attention.cab.3.attention.3.bias",
    }
    mamba = block + "attn.mamba.mamba."
    for name in ("A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight"):
        expected.add(mamba + name)
    for name in ("dt_proj.weight", "dt_proj.bias", "out_proj.weight"):
        expected.add(mamba + name)
    for name in ("A_b_log", "D_b", "conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight"):
        expected.add(mamba + name)
    assert expected <= keys
    assert not any(k.endswith("mean") for k in keys)  # the RGB mean is a non-persistent buffer
    # conv_first and conv_after_body, 2 blocks of 34 tensors, 2 upsample convs, conv_last
    assert len(keys) == 4 + 2 * 34 + 4 + 2
    assert MMA(upscale=3, **SMALL).state_dict()["upsample.0.weight"].shape == (9 * 32, 32, 3, 3)


def test_unsupported_scale():
    with pytest.raises(ValueError, match="upscale 5"):
        MMA(upscale=5, **SMALL)


def test_img_range_default_is_what_every_official_file_sets():
    # The official constructor's default is BasicSR's 255; every official option file sets 1.
    assert inspect.signature(MMA).parameters["img_range"].default == 1.0
    paths = sorted((CONFIGS / "mma").glob("*.yml"))
    assert len(paths) == 9
    for path in paths:
        config, _ = load_config(path)
        assert config.network_g.args["img_range"] == 1.0, path.name
    assert MMA(upscale=2, num_feat=32, num_block=1).img_range == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_block": 0}, "num_block 0 must be at least 1"),
        ({"num_block": 2.0}, "num_block must be an integer, got 2.0"),
        ({"num_feat": 29}, "num_feat 29 must be at least 30"),
        ({"upscale": 1}, "upscale 1 must be at least 2"),
        ({"upscale": 6}, "upscale 6 is not supported; use a power of two (2, 4, 8, ...) or 3"),
        ({"num_in_ch": 1}, "num_in_ch 1 is not supported"),
        ({"num_out_ch": True}, "num_out_ch must be an integer, got True"),
        ({"img_range": float("inf")}, "img_range inf must be a positive finite number"),
        ({"rgb_mean": (0.5, 0.5)}, "rgb_mean [0.5, 0.5] must be 3 finite numbers"),
    ],
)
def test_rejects_out_of_range_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MMA(**{**SMALL, "upscale": 2, **kwargs})


def test_smallest_valid_network_runs():
    # The lower bounds are real: 30 features (CAB squeezes 30-fold to 1 channel) and one block work.
    model = MMA(num_feat=30, num_block=1, upscale=8).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 3, 4))
    assert out.shape == (1, 3, 24, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("upscale", [2, 3, 4])
def test_shapes_and_gradients(upscale):
    model = seeded(MMA(upscale=upscale, **SMALL), seed=upscale).train()
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, 3, 5 * upscale, 7 * upscale)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not re.search(r"attention\.(1\.|3\.weight)", name):  # CAB's 1-channel ReLU squeeze may be dead
            assert p.grad.abs().sum() > 0, name


def test_full_preset_tiny_input():
    model = seeded(MMA(upscale=3, **VARIANTS["mma"]), seed=7, scale=0.02).train()
    x = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    out = model(x)
    assert out.shape == (1, 3, 18, 15)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_mamba_scans_both_directions():
    # Swapping the forward and backward parameters and reversing the sequence reverses the output,
    # and the first token sees the last one (a one-directional scan would be causal).
    model = seeded(MMA(upscale=2, **SMALL), seed=11)
    mamba = model.body[0].attn.mamba.mamba
    tokens = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = mamba(tokens)
        changed = tokens.clone()
        changed[:, -1] += 3.0
        assert (mamba(changed)[:, 0] - out[:, 0]).abs().max() > 1e-3 * out.abs().max()
        pairs = dict(conv1d="conv1d_b", x_proj="x_proj_b", dt_proj="dt_proj_b", A_log="A_b_log", D="D_b")
        pairs |= {b: f for f, b in pairs.items()}
        swapped = {}
        for name, value in mamba.state_dict().items():
            head, _, rest = name.partition(".")
            swapped[".".join(filter(None, (pairs.get(head, head), rest)))] = value.clone()  # no aliasing
        mamba.load_state_dict(swapped, strict=True)
        torch.testing.assert_close(mamba(tokens.flip(1)), out.flip(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_state_dict_round_trip(fmt, tmp_path):
    model = seeded(MMA(upscale=2, **SMALL), seed=5)
    x = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
    if fmt == "torch":
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
    else:
        save_file(model.state_dict(), tmp_path / "mma.safetensors")
        state = load_file(tmp_path / "mma.safetensors")
    restored = MMA(upscale=2, **SMALL).eval()
    restored.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(restored(x), expected)
