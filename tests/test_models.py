"""The presets and ``sisr.models.build``: every bad constructor argument is one line, on every path.

The paths are the ones a user takes: ``create_model``, a config (``load_config`` + ``build_network``),
``sisr train CONFIG --dry-run KEY=VALUE``, and ``load_model`` with an override.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sisr
from sisr.cli import main
from sisr.config import build_network, load_config
from sisr.errors import SisrError
from sisr.models import PRESETS, build, create_model

CONFIGS = Path(__file__).parent.parent / "configs"
SEEMORE_T = CONFIGS / "seemore" / "train_SeemoRe_T_X4.yml"  # num_experts 3, topk 1
MMA_X2 = CONFIGS / "mma" / "train_MMA_x2_finetune.yml"

# (config, overrides, the message after "network_g: "). The first five were tracebacks or accepted.
BAD_NETWORKS = [
    (SEEMORE_T, ["network_g.topk=9"], "topk 9 must be between 1 and num_experts (3)"),
    (SEEMORE_T, ["network_g.embedding_dim=-1"], "embedding_dim -1 must be at least 1"),
    (SEEMORE_T, ["network_g.num_experts=0"], "num_experts 0 must be at least 1"),
    (SEEMORE_T, ["network_g.num_layers=0"], "num_layers 0 must be at least 1"),
    (SEEMORE_T, ["network_g.global_kernel_size=0"], "global_kernel_size 0 must be at least 1"),
    (SEEMORE_T, ["network_g.global_kernel_size=10"], "global_kernel_size 10 must be odd (1, 3, 5, ...)"),
    (SEEMORE_T, ["network_g.recursive=-1"], "recursive -1 must be at least 0"),
    (SEEMORE_T, ["network_g.topk=0"], "topk 0 must be between 1 and num_experts (3)"),
    (
        SEEMORE_T,
        ["network_g.in_chans=1"],
        "in_chans 1 is not supported; the network's RGB mean shift needs 3 channels",
    ),
    (SEEMORE_T, ["network_g.img_range=0"], "img_range 0.0 must be a positive finite number"),
    (MMA_X2, ["network_g.num_block=0"], "num_block 0 must be at least 1"),
    (
        MMA_X2,
        ["network_g.num_feat=16"],
        "num_feat 16 must be at least 30 (the channel attention squeezes it 30-fold)",
    ),
    (
        MMA_X2,
        ["network_g.num_out_ch=1"],
        "num_out_ch 1 is not supported; the network's RGB mean shift needs 3 channels",
    ),
    (MMA_X2, ["network_g.img_range=-1"], "img_range -1.0 must be a positive finite number"),
    (
        MMA_X2,
        ["scale=5", "network_g.upscale=5"],
        "upscale 5 is not supported; use a power of two (2, 4, 8, ...) or 3",
    ),
]
IDS = [" ".join(overrides) for _, overrides, _ in BAD_NETWORKS]


@pytest.mark.parametrize(("config", "overrides", "message"), BAD_NETWORKS, ids=IDS)
def test_config_network_out_of_range(config: Path, overrides: list[str], message: str) -> None:
    loaded, _ = load_config(config, overrides)  # the types are right; the range is the constructor's
    with pytest.raises(SisrError) as caught:
        build_network(loaded)
    assert str(caught.value) == f"network_g: {message}"


@pytest.mark.parametrize(("config", "overrides", "message"), BAD_NETWORKS[:5], ids=IDS[:5])
def test_cli_dry_run_network_out_of_range(
    config: Path, overrides: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(config), *overrides, "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"sisr: error: network_g: {message}\n"
    assert captured.out == ""


def test_build_and_create_model_say_where() -> None:
    with pytest.raises(SisrError, match=r"^seemore: topk 4 must be between 1 and num_experts \(3\)$"):
        build("seemore", {**PRESETS["seemore-t"][1], "topk": 4})
    with pytest.raises(SisrError, match=r"^net: num_block 0 must be at least 1$"):
        build("mma", {"num_block": 0}, where="net")
    with pytest.raises(SisrError, match=r"^mma-s: upscale 6 is not supported"):
        create_model("mma-s", 6)
    with pytest.raises(SisrError, match=r"^seemore-t: scale must be an integer, got 2.5$"):
        create_model("seemore-t", 2.5)  # type: ignore[arg-type]
    with pytest.raises(SisrError, match="unexpected keyword argument 'num_feats'"):
        build("mma", {"num_feats": 32})


def test_load_model_override_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "t.pth"
    torch.save(create_model("seemore-t", 2).state_dict(), path)
    with pytest.raises(SisrError) as caught:
        sisr.load_model(path, topk=5)
    assert str(caught.value) == f"{path}: seemore: topk 5 must be between 1 and num_experts (3)"


def test_mma_s_preset_is_the_shipped_network() -> None:
    # 48 features and 6 blocks, as the shipped mma-s-x2/x4 files and their configs.
    assert PRESETS["mma-s"] == ("mma", {"num_feat": 48, "num_block": 6, "img_range": 1.0})
    for scale in (2, 4):
        shipped = sisr.load_model(f"mma-s-x{scale}")
        fresh = create_model("mma-s", scale=scale)
        assert {k: v.shape for k, v in fresh.state_dict().items()} == {
            k: v.shape for k, v in shipped.state_dict().items()
        }
        assert fresh.img_range == shipped.img_range == 1.0
    for config in sorted((CONFIGS / "shipped").glob("mma_s_*.yml")):
        loaded, _ = load_config(config)
        args = loaded.network_g.args
        assert {k: args[k] for k in PRESETS["mma-s"][1]} == PRESETS["mma-s"][1], config.name
    assert sum(p.numel() for p in create_model("mma-s", 4).parameters()) == 534_285
