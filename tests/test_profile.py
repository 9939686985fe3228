"""`sisr profile` (sisr.analysis.profile): parameters and multiply-adds as SeemoRe's Table 1 counts them,
the selective scan's own count, latency and memory, and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import sisr.ops._chunked
import sisr.ops._fused
from sisr.analysis.profile import Macs, count_macs, parse_size, profile_model, run_profile
from sisr.errors import SisrError
from sisr.models import create_model
from sisr.models.mma import MMA
from sisr.models.seemore import MoELayer
from sisr.ops import ScanInputs, selective_scan_bidirectional

# SeemoRe's Table 1 (ICML 2024): SeemoRe-T parameters and GMACs for a 1280x720 output, by scale.
PAPER_SEEMORE_T = {2: (220_104, 45), 3: (224_979, 20), 4: (231_804, 12)}


def _quiet(*lines: object) -> None:
    pass


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_seemore_t_matches_the_paper(scale: int) -> None:
    params, gmacs = PAPER_SEEMORE_T[scale]
    p = profile_model("seemore-t", scale=scale, timed=False)
    assert p.params == params
    assert round(p.macs / 1e9) == gmacs  # the paper rounds to whole GMACs
    assert p.scan_macs == 0
    assert p.input_size == (1280 // scale, 720 // scale)
    assert p.latency_ms is None and p.peak_memory_mb is None


def test_seemore_is_counted_at_its_costliest_routing() -> None:
    # SeemoRe-T x2: each of 6 layers picks 1 of 3 experts of rank 2, 4, 8; each costs 3 * 36 * rank
    # MACs per LR pixel (three 1x1 convs). The count keeps rank 8 everywhere.
    model = create_model("seemore-t", 2)
    macs = count_macs(model, (640, 360)).conv_linear
    pixels = 640 * 360
    for layer in (m for m in model.modules() if isinstance(m, MoELayer)):
        layer.topk = 3  # every expert counted: the two cheaper ones on top
    every = count_macs(model, (640, 360)).conv_linear
    assert every - macs == 6 * pixels * 3 * 36 * (2 + 4)
    assert round(every / 1e9) == 46  # why the paper's 45 is not "all experts", rounded


def test_scan_macs_of_a_small_mma_are_9_bldn_per_direction() -> None:
    num_feat, num_block, width, height = 30, 2, 12, 8
    model = MMA(num_feat=num_feat, num_block=num_block, upscale=2)
    macs = count_macs(model, (width, height))
    d_inner, d_state = 2 * num_feat, 16  # MMA's Mamba: expand 2, d_state 16
    directions = 2
    assert macs.scan == num_block * directions * 9 * 1 * (width * height) * d_inner * d_state
    assert macs.conv_linear > 0


def test_the_scan_on_meta_is_one_counted_op_per_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CPU backend ran on meta tensors")

    monkeypatch.setattr(sisr.ops._chunked, "selective_scan", never)
    monkeypatch.setattr(sisr.ops._fused, "selective_scan", never)
    monkeypatch.setattr(sisr.ops._fused, "selective_scan_bidirectional", never)
    b, d, n, length = 2, 6, 4, 10_000

    def inputs() -> ScanInputs:
        def t(*shape: int) -> torch.Tensor:
            return torch.empty(*shape, device="meta")

        return ScanInputs(
            t(b, d, length), t(b, d, length), t(d, n), t(b, n, length), t(b, n, length), t(d), t(d)
        )

    one_each = {torch.ops.sisr.selective_scan: lambda *args, **kwargs: 1}  # counts the calls
    with FlopCounterMode(display=False, custom_mapping=one_each) as counter:
        y = selective_scan_bidirectional(inputs(), inputs(), torch.empty(b, d, length, device="meta"), True)
    assert y.shape == (b, d, length) and y.device.type == "meta"
    assert counter.get_total_flops() == 2  # one op per direction
    # and the counting itself works without the kernel, through the registered op:
    assert count_macs(MMA(num_feat=30, num_block=1, upscale=2), (5, 4)).scan == 2 * 9 * 20 * 60 * 16


def test_macs_scale_with_the_output_size() -> None:
    # Cost = per-pixel part x pixels + a per-image part (routers, channel attention on pooled features),
    # so equal steps in pixels give equal steps in MACs; the scan is per pixel only.
    for name, scale in (("seemore-t", 4), ("mma-s", 2)):
        model = create_model(name, scale)
        m1, m2, m4 = (count_macs(model, (16 * k, 16)) for k in (1, 2, 4))
        assert m4.conv_linear - m2.conv_linear == 2 * (m2.conv_linear - m1.conv_linear) > 0
        assert m4.scan == 2 * m2.scan == 4 * m1.scan
        p = profile_model(name, scale=scale, output_size=(64 * scale, 16 * scale), timed=False)
        assert (p.macs, p.scan_macs) == (m4.conv_linear, m4.scan)


def test_the_papers_mma_at_1280x720() -> None:
    with torch.device("meta"):
        model = create_model("mma", 2)
    macs = count_macs(model, (640, 360))
    assert macs.scan == 24 * 2 * 9 * 640 * 360 * 384 * 16  # 24 blocks, d_inner 384, 16 states
    assert isinstance(macs, Macs) and macs.conv_linear > 10**12


def test_shipped_models_by_name() -> None:
    shipped = profile_model("seemore-t-x4", timed=False)
    preset = profile_model("seemore-t", scale=4, timed=False)
    assert (shipped.weights, preset.weights) == ("shipped", "none (preset)")
    assert (shipped.params, shipped.macs, shipped.scale) == (preset.params, preset.macs, 4)
    assert profile_model("mma-s-x2", timed=False).scan_macs > 0


def test_json_and_markdown_are_written(tmp_path: Path) -> None:
    lines: list[str] = []
    rows = run_profile(
        ["seemore-t-x4", "mma-s"],
        scale=4,
        output_size=(128, 96),
        json_path=tmp_path / "p.json",
        markdown_path=tmp_path / "p.md",
        timed=False,
        out=lines.append,
    )
    report = json.loads((tmp_path / "p.json").read_text())
    assert [m["model"] for m in report["models"]] == ["seemore-t-x4", "mma-s"]
    assert (
        report["models"][0]["macs"] == rows[0].macs and report["models"][1]["scan_macs"] == rows[1].scan_macs
    )
    assert report["models"][0]["input_size"] == [32, 24] and report["output_size"] == [128, 96]
    markdown = (tmp_path / "p.md").read_text()
    assert (
        markdown.startswith("Machine: ") and "| seemore-t-x4 | shipped | x4 | 32x24 | 231,804 |" in markdown
    )
    assert "| mma-s | none (preset) | x4 |" in markdown and "9·B·L·D·N" in markdown
    assert sum(line.startswith("| ") for line in lines) == 3  # header and two rows, printed as they come
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.md"]  # no temporary left


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_size("1280*720"), "WIDTHxHEIGHT"),
        (lambda: parse_size("0x720"), "WIDTHxHEIGHT"),
        (lambda: parse_size("-5x3"), "WIDTHxHEIGHT"),
        (lambda: profile_model("nonesuch", timed=False), "unknown model 'nonesuch'"),
        (lambda: profile_model("seemore-t", scale=4, device="tpu", timed=False), "unknown device"),
        (lambda: profile_model("seemore-t", scale=4, device="meta", timed=False), "unsupported device"),
        (lambda: profile_model("seemore-t-x4", scale=2, timed=False), "x4 model, not x2"),
        (lambda: profile_model("seemore-t", scale=4, output_size=(32, 32), timed=False), "at least 16x16"),
        (lambda: profile_model("seemore-t", scale=4, output_size=(3, 720), timed=False), "smaller than"),
        (lambda: run_profile([], timed=False), "at least one model"),
    ],
)
def test_bad_input_is_one_line(call: object, message: str) -> None:
    with pytest.raises(SisrError, match=message) as info:
        call()  # type: ignore[operator]
    assert "\n" not in str(info.value)


def test_a_missing_output_folder_is_reported_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SisrError, match="no such folder"):
        run_profile(["nonesuch"], json_path=tmp_path / "no" / "p.json", timed=False, out=_quiet)


@pytest.mark.slow
def test_latency_and_memory_in_a_fresh_process(tmp_path: Path) -> None:
    (row,) = run_profile(
        ["seemore-t-x4"], output_size=(128, 128), repeats=1, json_path=tmp_path / "p.json", out=_quiet
    )
    assert row.latency_ms is not None and row.latency_ms > 0
    # 36 channels of 32x32 float32 are 0.14 MB a map: the peak is a few MB, nothing of the parent's.
    assert row.peak_memory_mb is not None and 0 <= row.peak_memory_mb < 200
    assert json.loads((tmp_path / "p.json").read_text())["models"][0]["latency_ms"] == row.latency_ms


def test_untimed_over_the_limit() -> None:
    p = profile_model("mma-s", scale=4, output_size=(64, 64), max_timed_macs=1000)
    assert p.latency_ms is None and p.note is not None and "over the limit" in p.note


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = pytest.importorskip("sisr.cli")
    if "profile" not in getattr(cli, "COMMANDS", {}):
        pytest.skip("sisr profile is not wired into the dispatcher yet")
    out = tmp_path / "p.json"
    status = cli.main(["profile", "--model", "seemore-t", "--scale", "2", "--no-latency", "--json", str(out)])
    assert status == 0 and json.loads(out.read_text())["models"][0]["params"] == 220_104
    assert "| seemore-t | none (preset) | x2 | 640x360 | 220,104 | 44.98 G |" in capsys.readouterr().out
    for argv, message in (
        (["--model", "nonesuch"], "unknown model"),
        (["--model", "seemore-t", "--output-size", "big"], "WIDTHxHEIGHT"),
        (["--model", "seemore-t", "--device", "tpu"], "unknown device"),
    ):
        assert cli.main(["profile", "--no-latency", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("sisr: error: ") and message in err and err.count("\n") == 1


def test_the_scan_on_meta_has_gradients_of_the_right_shapes() -> None:
    b, d, n, length = 2, 6, 4, 50
    shapes = {"u": (b, d, length), "delta": (b, d, length), "A": (d, n), "B": (b, n, length)}
    shapes |= {"C": (b, n, length), "D": (d,), "z": (b, d, length), "delta_bias": (d,)}
    x = {k: torch.empty(*s, device="meta", requires_grad=True) for k, s in shapes.items()}
    y = sisr.ops.selective_scan(**x, delta_softplus=True, reverse=True)
    assert y.shape == (b, d, length) and y.device.type == "meta"
    y.sum().backward()
    assert {k: tuple(t.grad.shape) for k, t in x.items() if t.grad is not None} == shapes
