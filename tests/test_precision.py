"""Reduced precision (:mod:`sisr.precision`): the device check, the measured per-architecture gate,
bf16 output against fp32, and the one-line refusals of the CLI."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

import sisr.precision
from sisr.checkpoint import load_model
from sisr.cli import main
from sisr.data.images import write_image
from sisr.errors import SisrError
from sisr.heldout import lr_of, photo
from sisr.inference import upscale
from sisr.metrics import modcrop
from sisr.models import ARCHS, create_model
from sisr.precision import GATE, GATE_DB, PRECISIONS, check_model_precision, check_precision

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretends this CPU has native bf16 (autocast then runs in bf16 either way, emulated or not)."""
    monkeypatch.setattr(sisr.precision, "_cpu_has_native_bf16", lambda: True)


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sisr.precision, "_cpu_has_native_bf16", lambda: False)


def test_gate_covers_every_architecture_and_keeps_fp32() -> None:
    assert set(GATE) == set(ARCHS)
    for allowed in GATE.values():
        assert "fp32" in allowed and set(allowed) <= set(PRECISIONS)
    assert "fp16" not in GATE["seemore"]  # not measured (CPU-only); spandrel marks it not fp16-safe


@pytest.mark.parametrize("arch", sorted(GATE))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_gate_refuses_and_accepts_as_recorded(
    arch: str, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sisr.precision, "device_supports", lambda precision, device: True)
    if precision in GATE[arch]:
        check_precision(precision, arch=arch, device=CPU)
    else:
        with pytest.raises(SisrError, match=f"precision {precision} is not allowed for {arch}") as err:
            check_precision(precision, arch=arch, device=CPU)
        assert "\n" not in str(err.value)


def test_unknown_precision_is_one_line() -> None:
    with pytest.raises(SisrError, match="unknown precision 'fp8'"):
        check_precision("fp8", arch="seemore", device=CPU)


@pytest.mark.usefixtures("no_native_bf16")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_unsupported_on_this_device_is_one_line(precision: str) -> None:
    with pytest.raises(SisrError, match=f"precision {precision} is not supported on cpu") as err:
        check_precision(precision, arch="seemore", device=CPU)
    assert "\n" not in str(err.value)


@pytest.mark.usefixtures("no_native_bf16")
def test_upscale_refuses_before_running() -> None:
    model = create_model("seemore-t", 2).eval()
    with pytest.raises(SisrError, match="not supported on cpu"):
        upscale(model, np.zeros((8, 8, 3), np.uint8), precision="bf16")
    check_model_precision(model, "fp32")  # fp32 runs everywhere


def test_cpu_flags_decide_native_bf16() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "flags" not in flags:
        pytest.skip("no /proc/cpuinfo flags here")
    expected = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    assert sisr.precision._cpu_has_native_bf16() is expected


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.usefixtures("native_bf16")
@pytest.mark.parametrize("name", ["seemore-t-x4", "mma-s-x2"])
def test_bf16_output_stays_within_the_gate(name: str) -> None:
    model = load_model(name)
    scale = 4 if name.endswith("x4") else 2
    lr = np.ascontiguousarray(lr_of(modcrop(photo("astronaut"), scale), scale)[40:72, 60:100])  # (32, 40, 3)
    ref = upscale(model, lr)
    out = upscale(model, lr, precision="bf16")
    assert out.dtype == np.uint8 and out.shape == ref.shape
    assert not np.array_equal(out, ref)  # bf16 did run
    assert _psnr(out, ref) >= GATE_DB


@pytest.mark.usefixtures("no_native_bf16")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cli_upscale_refuses_in_one_line(
    precision: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.png"
    write_image(source, np.zeros((8, 8, 3), np.uint8))
    status = main(["upscale", str(source), "-o", str(tmp_path / "out.png"), "--precision", precision])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err == [
        f"sisr: error: precision {precision} is not supported on cpu" + err[0].split("on cpu", 1)[1]
    ]
    assert not (tmp_path / "out.png").exists()


@pytest.mark.usefixtures("native_bf16")
def test_cli_upscale_runs_bf16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.png"
    write_image(source, np.full((8, 8, 3), 120, np.uint8))
    status = main(
        ["upscale", str(source), "-o", str(tmp_path / "out.png"), "-m", "seemore-t-x2", "--precision", "bf16"]
    )
    assert status == 0 and (tmp_path / "out.png").is_file()


def test_cli_evaluate_and_test_take_precision(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["evaluate", "-m", "x", "--data", "d"], ["test", "c.yml"]):
        assert main([*command, "--precision", "fp8"]) == 2
        assert "invalid choice: 'fp8'" in capsys.readouterr().err


@pytest.mark.usefixtures("no_native_bf16")
def test_cli_evaluate_refuses_before_reading_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["evaluate", "-m", "seemore-t-x2", "--data", str(tmp_path / "none"), "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and "precision fp16 is not supported on cpu" in err[0]


# --- the scan under bf16 autocast -------------------------------------------------------------------------
# The scans are not autocast ops: under autocast they compute in float32 whatever the inputs' dtype, and
# return the dtype of u. Tolerance against the float32 scan of unrounded inputs: 3e-2 of the output's
# largest magnitude (bf16 keeps 8 significant bits: inputs and output are each rounded by up to 2^-9).
SCAN_BF16_TOL = 3e-2


def _directions(length: int = 70) -> tuple[list[Tensor], list[Tensor], Tensor]:
    g = torch.Generator().manual_seed(0)
    batch, d, n = 2, 6, 16

    def one() -> list[Tensor]:
        a_log = torch.log(torch.arange(1, n + 1.0)).repeat(d, 1) + 0.2 * torch.randn(d, n, generator=g)
        return [
            torch.randn(batch, d, length, generator=g),  # u
            torch.randn(batch, d, length, generator=g) - 1.0,  # delta (before bias and softplus)
            -torch.exp(a_log),  # A
            torch.randn(batch, n, length, generator=g),  # B
            torch.randn(batch, n, length, generator=g),  # C
            torch.randn(d, generator=g),  # D
            0.1 * torch.randn(d, generator=g),  # delta_bias
        ]

    return one(), one(), torch.randn(batch, d, length, generator=g)


def _bidirectional(fwd: list[Tensor], bwd: list[Tensor], z: Tensor) -> Tensor:
    from sisr.ops import ScanInputs, selective_scan_bidirectional

    return selective_scan_bidirectional(ScanInputs(*fwd), ScanInputs(*bwd), z, True)


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("fused", [True, False])
def test_scan_under_autocast_stays_float32(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from sisr.ops import _fused

    if not fused:  # the chunked PyTorch scan (no kernel built)
        monkeypatch.setattr(_fused, "available", lambda: False)
    elif not _fused.available():
        pytest.skip("fused kernel not built")
    fwd, bwd, z = _directions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the one-time "kernel not built" note
        ref = _bidirectional(fwd, bwd, z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = _bidirectional(fwd, bwd, z)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_scan_of_bf16_inputs_computes_in_float32() -> None:
    fwd, bwd, z = _directions()
    ref = _bidirectional(fwd, bwd, z)

    def bf16(ts: list[Tensor]) -> list[Tensor]:
        return [t.bfloat16() for t in ts]

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _bidirectional(bf16(fwd), bf16(bwd), z.bfloat16())
    assert got.dtype == torch.bfloat16
    # float32 arithmetic on the rounded inputs, rounded once at the end ...
    rounded = _bidirectional(
        [t.float() for t in bf16(fwd)], [t.float() for t in bf16(bwd)], z.bfloat16().float()
    )
    torch.testing.assert_close(got, rounded.bfloat16(), rtol=0, atol=0)
    # ... and so within bf16's rounding of the float32 scan of the exact inputs.
    assert _rel(got, ref) < SCAN_BF16_TOL


# --- 1x1 convolutions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_equals_conv2d(channels_last: bool, bias: bool) -> None:
    from sisr.models._pointwise import PointwiseConv2d

    torch.manual_seed(0)
    conv = PointwiseConv2d(48, 254, bias=bias)
    assert set(conv.state_dict()) == set(torch.nn.Conv2d(48, 254, 1, bias=bias).state_dict())
    x = torch.randn(2, 48, 9, 11)
    if channels_last:
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    got, ref = conv(x), torch.nn.Conv2d.forward(conv, x)
    assert got.shape == ref.shape
    assert _rel(got, ref) < 1e-5
