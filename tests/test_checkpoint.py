"""Loading weights: every file layout, architecture detection, overrides and every kind of bad file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import sisr
from sisr.checkpoint import (
    detect,
    load_model,
    read_weights,
    save_checkpoint,
    save_safetensors,
)
from sisr.errors import SisrError
from sisr.models import PRESETS, build, create_model
from sisr.runtime import resolve_device

# Small MMA configurations (the full one is tested elsewhere); the SeemoRe presets are small already.
SMALL_MMA = {"num_feat": 32, "num_block": 2, "img_range": 1.0}


def _model(arch: str, args: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(arch, args).eval()


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = []
    for scale in (2, 3, 4):
        cases.append(("mma", {**SMALL_MMA, "upscale": scale}))
        for name in ("seemore-t", "seemore-b", "seemore-l"):
            cases.append(("seemore", {**PRESETS[name][1], "scale": scale}))
    return cases


@pytest.mark.parametrize(("arch", "args"), _cases(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_detect_reads_every_visible_hyperparameter(arch: str, args: dict[str, Any]) -> None:
    model = _model(arch, args)
    found_arch, found = detect(model.state_dict())
    assert found_arch == arch
    for key, value in found.items():
        assert args.get(key, value) == value, key
    expected_keys = (
        {"num_feat", "num_block", "upscale"}
        if arch == "mma"
        else {"embedding_dim", "num_layers", "num_experts", "lr_space", "global_kernel_size", "scale"}
    )
    assert expected_keys <= set(found)


@pytest.mark.parametrize("preset", ["seemore-t", "seemore-b", "seemore-l"])
@pytest.mark.parametrize("layout", ["raw", "params", "params_ema", "module"])
def test_official_layouts_load_strictly(tmp_path: Path, preset: str, layout: str) -> None:
    model = create_model(preset, 2).eval()
    sd = model.state_dict()
    obj: Any = {
        "raw": sd,
        "params": {"params": sd},
        "params_ema": {"params_ema": sd},
        "module": {"params": {f"module.{k}": v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / "official.pth"
    torch.save(obj, path)
    loaded = load_model(path)
    assert not loaded.training
    x = torch.rand(1, 3, 17, 18)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # The hidden arguments came from the matching preset.
    for key in ("use_shuffle", "recursive", "topk"):
        assert getattr(loaded_args(loaded), key) == PRESETS[preset][1][key]


def loaded_args(model: torch.nn.Module) -> Any:
    """The SeemoRe arguments that leave no trace in tensors, read back from the built modules."""

    class Args:
        use_shuffle = model.body[0].local_block.block.use_shuffle
        recursive = model.body[0].local_block.block.recursive
        topk = model.body[0].local_block.block.moe_layer.topk

    return Args


def test_params_ema_is_preferred_and_params_can_be_asked_for(tmp_path: Path) -> None:
    ema, raw = _model("mma", {**SMALL_MMA, "upscale": 2}, 1), _model("mma", {**SMALL_MMA, "upscale": 2}, 2)
    path = tmp_path / "both.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), ema(x), rtol=0, atol=0)
        torch.testing.assert_close(load_model(path, param_key="params")(x), raw(x), rtol=0, atol=0)
    only = tmp_path / "only.pth"
    torch.save({"params": raw.state_dict()}, only)
    with pytest.raises(SisrError, match="no 'params_ema'"):
        load_model(only, param_key="params_ema")


@pytest.mark.parametrize(("arch", "args"), [("mma", {**SMALL_MMA, "upscale": 3}), ("seemore", None)])
def test_own_checkpoint_and_safetensors_round_trip(tmp_path: Path, arch: str, args: Any) -> None:
    args = args or {**PRESETS["seemore-b"][1], "scale": 4}
    model = _model(arch, args)
    x = torch.rand(2, 3, 16, 19)
    with torch.no_grad():
        want = model(x)
    save_checkpoint(tmp_path / "own.pth", arch=arch, args=args, params=model.state_dict(), step=7)
    save_safetensors(tmp_path / "w.safetensors", arch=arch, args=args, params=model.state_dict())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    for name in ("own.pth", "w.safetensors", "bare.safetensors"):
        with torch.no_grad():
            torch.testing.assert_close(load_model(tmp_path / name)(x), want, rtol=0, atol=0)
    assert read_weights(tmp_path / "own.pth").metadata["step"] == 7
    assert read_weights(tmp_path / "w.safetensors").arch == arch


def test_declared_arguments_beat_presets(tmp_path: Path) -> None:
    # A T-sized network whose hidden arguments differ from the T preset: only the file knows them.
    args = {**PRESETS["seemore-t"][1], "scale": 2, "use_shuffle": False, "recursive": 1}
    model = _model("seemore", args)
    save_safetensors(tmp_path / "w.safetensors", arch="seemore", args=args, params=model.state_dict())
    loaded = load_model(tmp_path / "w.safetensors")
    assert loaded_args(loaded).use_shuffle is False and loaded_args(loaded).recursive == 1


def test_overrides(tmp_path: Path) -> None:
    model = create_model("seemore-t", 2)
    path = tmp_path / "t.pth"
    torch.save(model.state_dict(), path)
    assert loaded_args(load_model(path, recursive=1)).recursive == 1
    with pytest.raises(SisrError, match=r"unknown argument.*recursiv"):
        load_model(path, recursiv=1)


def test_mma_uses_the_official_img_range_unless_told(tmp_path: Path) -> None:
    args = {**SMALL_MMA, "upscale": 2, "img_range": 255.0}
    model = _model("mma", args)
    path = tmp_path / "mma.pth"
    torch.save({"params": model.state_dict()}, path)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        assert not torch.allclose(load_model(path)(x), model(x))  # official files use img_range 1
        torch.testing.assert_close(load_model(path, img_range=255.0)(x), model(x), rtol=0, atol=0)


def test_unknown_seemore_size_warns_and_can_be_told(tmp_path: Path) -> None:
    args = {**PRESETS["seemore-t"][1], "scale": 2, "num_layers": 3}
    path = tmp_path / "odd.pth"
    torch.save(_model("seemore", args).state_dict(), path)
    with pytest.warns(UserWarning, match="match no preset"):
        load_model(path)
    load_model(path, use_shuffle=True, recursive=2, topk=1)  # fully specified: no warning needed


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files: dict[str, tuple[Path, str]] = {}
    (tmp_path / "empty.pth").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.pth", "empty file")
    (tmp_path / "garbage.pth").write_bytes(bytes(range(256)) * 10)
    files["garbage"] = (tmp_path / "garbage.pth", "not a PyTorch checkpoint")
    (tmp_path / "text.pth").write_text("hello\n")
    files["text"] = (tmp_path / "text.pth", "not a PyTorch checkpoint")
    torch.save({"params": torch.nn.Linear(3, 4).state_dict()}, tmp_path / "linear.pth")
    files["other arch"] = (tmp_path / "linear.pth", "not an MMA or SeemoRe state dict")
    sd = create_model("seemore-t", 2).state_dict()
    torch.save({k: v for k, v in sd.items() if not k.endswith("conv_2.bias")}, tmp_path / "missing.pth")
    files["missing keys"] = (tmp_path / "missing.pth", "missing")
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    files["unexpected keys"] = (tmp_path / "extra.pth", "1 unexpected .e.g. extra.weight")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    files["not a dict"] = (tmp_path / "list.pth", "not a state dict")
    files["no file"] = (tmp_path / "nope.pth", "no such file")
    return files


@pytest.mark.parametrize(
    "case",
    ["empty", "garbage", "text", "other arch", "missing keys", "unexpected keys", "not a dict", "no file"],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, case: str) -> None:
    path, message = _bad_files(tmp_path)[case]
    with pytest.raises(SisrError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_pickle_with_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"params": _Evil(marker)}, f)
    torch.save({"params": {"w": torch.zeros(1)}, "x": _Evil(marker)}, tmp_path / "evil2.pth")
    assert not marker.exists()
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(SisrError, match="refused") as err:
            load_model(p)
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_unknown_name_and_device() -> None:
    with pytest.raises(SisrError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    if not torch.cuda.is_available():
        with pytest.raises(SisrError, match="no usable CUDA"):
            resolve_device("cuda")
    with pytest.raises(SisrError, match="unknown device"):
        resolve_device("gpu0")


def test_public_api_is_reexported() -> None:
    assert sisr.load_model is load_model
    assert sisr.create_model is create_model


# ---------------------------------------------------------------------------------------------------------
# What a file declares, its tensors' types, mixed prefixes, the format version


def _safetensors_with_args(path: Path, args_json: str) -> Path:
    sd = create_model("seemore-t", 2).state_dict()
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(path),
        metadata={"sisr.arch": "seemore", "sisr.args": args_json},
    )
    return path


@pytest.mark.parametrize(
    ("args_json", "message"),
    [
        ("[1, 2]", "sisr.args metadata is list, not a mapping of constructor arguments"),
        ('"scale"', "sisr.args metadata is str, not a mapping of constructor arguments"),
        ("4", "sisr.args metadata is int, not a mapping of constructor arguments"),
        ('{"scale": 2, "bogus": 1}', "the file declares unknown argument(s) bogus for seemore"),
        ('{"scale": "two"}', "args.scale: expected an integer, got 'two'"),
        ('{"scale": 2, "lr_space": "cubic"}', "args.lr_space: expected one of 'linear', 'exp', 'double'"),
        ('{"scale": 2, "use_shuffle": 1}', "args.use_shuffle: expected true or false, got 1"),
        ('{"scale": 2, "img_range": NaN}', "args.img_range: expected a finite number, got nan"),
        ("{not json", "corrupt sisr metadata"),
    ],
)
def test_bad_declared_arguments_are_one_line_errors(tmp_path: Path, args_json: str, message: str) -> None:
    path = _safetensors_with_args(tmp_path / "w.safetensors", args_json)
    with pytest.raises(SisrError) as err:
        load_model(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_declared_arguments_in_a_pth(tmp_path: Path) -> None:
    sd = create_model("seemore-t", 2).state_dict()
    torch.save(
        {"format": "sisr", "version": 1, "arch": "seemore", "args": "scale=2", "params": sd},
        tmp_path / "a.pth",
    )
    with pytest.raises(SisrError, match="its 'args' entry is str, not a mapping of constructor arguments"):
        load_model(tmp_path / "a.pth")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_tensors_that_are_not_floating_point_are_refused(
    tmp_path: Path, dtype: torch.dtype, kind: str
) -> None:
    sd = create_model("seemore-t", 2).state_dict()
    name = "conv_1.weight"
    sd[name] = (sd[name] * 100).to(dtype)
    path = tmp_path / f"int.{kind}"
    if kind == "pth":
        torch.save({"params": sd}, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(
        SisrError, match=rf"refused: 1 tensor\(s\) of .* are not floating point \(e.g. {name}: {dtype}\)"
    ):
        load_model(path)
    with pytest.raises(SisrError, match="not floating point"):
        read_weights(path)


def test_module_prefix_on_only_some_names_is_named(tmp_path: Path) -> None:
    sd = create_model("seemore-t", 2).state_dict()
    first = next(iter(sd))
    mixed = {("module." + k if k == first else k): v for k, v in sd.items()}
    torch.save({"params": mixed}, tmp_path / "mixed.pth")
    with pytest.raises(SisrError) as err:
        load_model(tmp_path / "mixed.pth")
    text = str(err.value)
    assert "mixes names with and without the 'module.' prefix" in text
    assert f"1 of {len(sd)} have it, e.g. module.{first}" in text and "\n" not in text
    # Every name wrapped still loads (DataParallel checkpoints).
    torch.save({"params": {"module." + k: v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    load_model(tmp_path / "wrapped.pth")


def test_the_format_version_is_read(tmp_path: Path) -> None:
    model = create_model("seemore-t", 2)
    args = {**PRESETS["seemore-t"][1], "scale": 2}
    save_checkpoint(tmp_path / "own.pth", arch="seemore", args=args, params=model.state_dict())
    assert torch.load(tmp_path / "own.pth", weights_only=True)["version"] == 1
    save_safetensors(tmp_path / "own.safetensors", arch="seemore", args=args, params=model.state_dict())
    for name in ("own.pth", "own.safetensors"):
        load_model(tmp_path / name)
    state = torch.load(tmp_path / "own.pth", weights_only=True)
    for version, message in [
        (2, r"written by a newer sisr \(checkpoint format version 2; this sisr reads versions up to 1\)"),
        ("1", "format version '1' is not a positive integer"),
        (None, "format version None is not a positive integer"),
    ]:
        torch.save({**state, "version": version}, tmp_path / "v.pth")
        with pytest.raises(SisrError, match=message):
            load_model(tmp_path / "v.pth")
    sd = model.state_dict()
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(tmp_path / "v.safetensors"),
        metadata={"sisr.arch": "seemore", "sisr.args": '{"scale": 2}', "sisr.version": "3"},
    )
    with pytest.raises(SisrError, match=r"written by a newer sisr \(checkpoint format version 3"):
        load_model(tmp_path / "v.safetensors")
