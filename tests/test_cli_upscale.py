"""``sisr upscale`` (:mod:`sisr.cli.upscale` over :func:`sisr.upscaling.upscale_files`), run in-process
through ``main`` and once as the installed console script.

Every run uses a real network loaded through ``sisr.load_model``: a randomly initialised SeemoRe-T x2
saved as a raw state dict, the layout of the official checkpoints.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import sisr
from sisr.cli import main
from sisr.data.images import read_image, write_image
from sisr.models import create_model


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "seemore_t_x2.pth"
    torch.save(create_model("seemore-t", 2).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def model(checkpoint: Path) -> torch.nn.Module:
    return sisr.load_model(checkpoint)


@pytest.fixture
def small(rgb_photo: np.ndarray) -> np.ndarray:
    """(20, 24, 3) uint8: small enough for SeemoRe on a busy CPU."""
    return np.ascontiguousarray(rgb_photo[10:30, 12:36])


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Runs the CLI in-process; returns the exit status and the lines written to stderr.

    Standard output holds one ``INPUT -> OUTPUT (xS, MODEL)`` line per written image, nothing else.
    """
    status = main(argv)
    captured = capsys.readouterr()
    for line in captured.out.splitlines():
        source, _, rest = line.partition(" -> ")
        target = rest.rsplit(" (x", 1)[0]
        assert Path(source).is_file() and Path(target).is_file(), line
    return status, captured.err.splitlines()


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ----------------------------------------------------------------------------------------------------
# Working runs


def test_single_file(
    tmp_path: Path,
    small: np.ndarray,
    checkpoint: Path,
    model: torch.nn.Module,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_image(tmp_path / "in.png", small)
    status, err = run(
        [
            "upscale",
            str(tmp_path / "in.png"),
            "-o",
            str(tmp_path / "new" / "out.png"),
            "--model",
            str(checkpoint),
        ],
        capsys,
    )
    assert (status, err) == (0, [])
    out = read_image(tmp_path / "new" / "out.png")
    assert out.pixels.shape == (40, 48, 3)
    np.testing.assert_array_equal(out.pixels, sisr.upscale(model, small))
    # The network did something beyond resampling: the result is not nearest-neighbour.
    assert not np.array_equal(out.pixels, np.repeat(np.repeat(small, 2, 0), 2, 1))


def test_tiled_run_matches_the_api(
    tmp_path: Path,
    small: np.ndarray,
    checkpoint: Path,
    model: torch.nn.Module,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_image(tmp_path / "in.png", small)
    argv = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.webp"), "-m", str(checkpoint)]
    status, err = run([*argv, "--tile", "16", "--overlap", "8"], capsys)
    assert (status, err) == (0, [])
    out = read_image(tmp_path / "out.webp")
    assert out.format == "WEBP"  # the output extension picks the format
    np.testing.assert_array_equal(out.pixels, sisr.upscale(model, small, tile=16, overlap=8))


def test_folder_of_every_format(
    tmp_path: Path,
    small: np.ndarray,
    rgba_photo: np.ndarray,
    rgb16_photo: np.ndarray,
    checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_image(src / "a_gray.bmp", small[:, :, 1])
    write_image(src / "b_alpha.webp", rgba_photo[:20, :24])
    write_image(src / "c_deep.png", rgb16_photo[:20, :24])
    write_image(src / "d_deep_gray.TIF", rgb16_photo[:20, :24, 0])
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view: 24 wide, 20 high on screen
    PILImage.fromarray(small[:, :, ::-1]).save(src / "e_phone.jpg", exif=exif, quality=95)
    (src / "notes.txt").write_text("not an image")
    (src / "._e_phone.jpg").write_bytes(b"resource fork")  # hidden: skipped
    (src / "sub").mkdir()
    write_image(src / "sub" / "skipped.png", small)  # folders are not searched recursively

    status, err = run(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", str(checkpoint)], capsys)
    assert (status, err) == (0, [])
    names = ["a_gray.bmp", "b_alpha.webp", "c_deep.png", "d_deep_gray.TIF", "e_phone.jpg"]
    assert all_files(tmp_path / "out") == names
    for name in names:
        before, after = read_image(src / name), read_image(tmp_path / "out" / name)
        assert (after.mode, after.bit_depth, after.format) == (before.mode, before.bit_depth, before.format)
        assert after.pixels.shape[:2] == (2 * before.pixels.shape[0], 2 * before.pixels.shape[1])
    assert read_image(tmp_path / "out" / "e_phone.jpg").pixels.shape == (48, 40, 3)  # upright
    assert read_image(tmp_path / "out" / "c_deep.png").pixels.max() > 255  # still 16 bits


def test_several_inputs_go_to_a_folder(
    tmp_path: Path, small: np.ndarray, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x").mkdir()
    write_image(tmp_path / "x" / "one.png", small)
    write_image(tmp_path / "two.jpg", small[::-1])
    argv = ["upscale", str(tmp_path / "x" / "one.png"), str(tmp_path / "two.jpg"), "-o", str(tmp_path / "o")]
    status, err = run([*argv, "--model", str(checkpoint)], capsys)
    assert (status, err) == (0, [])
    assert all_files(tmp_path / "o") == ["one.png", "two.jpg"]
    # A single input goes into a folder when OUTPUT ends with a slash.
    status, err = run(["upscale", argv[1], "-o", f"{tmp_path / 'new'}/", "--model", str(checkpoint)], capsys)
    assert (status, err) == (0, [])
    assert all_files(tmp_path / "new") == ["one.png"]


def test_one_bad_input_among_several(
    tmp_path: Path, small: np.ndarray, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The others are still processed; the failure is one line, plus a summary; the status is 1.
    write_image(tmp_path / "good.png", small)
    png = (tmp_path / "good.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(png[: len(png) // 2])
    argv = ["upscale", str(tmp_path / "bad.png"), str(tmp_path / "good.png"), "-o", str(tmp_path / "o")]
    status, err = run([*argv, "--model", str(checkpoint)], capsys)
    assert status == 1
    assert len(err) == 2
    assert err[0].startswith("sisr: error: ") and "bad.png: cannot decode image" in err[0]
    assert err[1] == "sisr: error: 1 of 2 images failed"
    assert all_files(tmp_path / "o") == ["good.png"]


# ----------------------------------------------------------------------------------------------------
# User errors: one line, status 1, no traceback, no output


def _code_pickle(path: Path, marker: Path) -> None:
    """A checkpoint whose unpickling would create the folder `marker`."""

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(marker),))

    torch.save({"params": Payload()}, path)


def test_the_code_pickle_is_live(tmp_path: Path) -> None:
    # The payload used below really runs code when loaded unsafely, so refusing it means something.
    _code_pickle(tmp_path / "evil.pth", tmp_path / "proof")
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert (tmp_path / "proof").is_dir()


ERROR_CASES = [
    "missing input",
    "empty input",
    "truncated input",
    "text input",
    "decompression bomb",
    "missing checkpoint",
    "garbage checkpoint",
    "code pickle",
    "unknown model",
    "no cuda",
    "unknown device",
    "overlap too large",
    "overlap without tile",
    "tile too small for the model",
    "unknown output extension",
    "alpha to jpeg",
    "output overwrites input",
    "two inputs, one output name",
]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_user_errors(
    tmp_path: Path,
    case: str,
    small: np.ndarray,
    rgba_photo: np.ndarray,
    checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    inp = src / "in.png"
    write_image(inp, rgba_photo[:20, :24] if case == "alpha to jpeg" else small)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    inputs, output, model, extra = [str(inp)], out_dir / "result.png", str(checkpoint), []
    expected = ""
    if case == "missing input":
        inputs, expected = [str(src / "nope.png")], "nope.png: no such file"
    elif case == "empty input":
        inp.write_bytes(b"")
        expected = "in.png: file is empty"
    elif case == "truncated input":
        inp.write_bytes(inp.read_bytes()[:300])
        expected = "in.png: cannot decode image"
    elif case == "text input":
        inp.write_text("hello\n")
        expected = "in.png: not a PNG, JPEG, WebP, BMP, TIFF or GIF image"
    elif case == "decompression bomb":
        extra, expected = (
            ["--max-pixels", "100"],
            "in.png: image is 24x20 = 480 pixels, more than the limit of 100",
        )
    elif case == "missing checkpoint":
        model, expected = str(tmp_path / "nothing.pth"), "nothing.pth: no such file"
    elif case == "garbage checkpoint":
        (tmp_path / "garbage.pth").write_bytes(np.random.default_rng(0).bytes(5000))
        model, expected = str(tmp_path / "garbage.pth"), "garbage.pth: not a PyTorch checkpoint"
    elif case == "code pickle":
        _code_pickle(tmp_path / "evil.pth", tmp_path / "marker")
        model, expected = str(tmp_path / "evil.pth"), "evil.pth: refused"
    elif case == "unknown model":
        model, expected = "no-such-model", "unknown model 'no-such-model'"
    elif case == "no cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        extra, expected = ["--device", "cuda"], "device 'cuda' requested, but this machine has no usable CUDA"
    elif case == "unknown device":
        extra, expected = ["--device", "gpu"], "unknown device 'gpu' (use cpu, cuda, cuda:N or mps)"
    elif case == "overlap too large":
        extra, expected = ["--tile", "8", "--overlap", "8"], "--overlap (8) must be smaller than --tile (8)"
    elif case == "overlap without tile":
        extra, expected = ["--overlap", "4"], "--overlap needs --tile"
    elif case == "tile too small for the model":
        extra, expected = ["--tile", "8"], "tile size must be at least 16 for this model, got 8"
    elif case == "unknown output extension":
        output, expected = out_dir / "result.xyz", "cannot choose an image format for extension '.xyz'"
    elif case == "alpha to jpeg":
        output, expected = out_dir / "result.jpg", "JPEG cannot store the alpha channel"
    elif case == "output overwrites input":
        inputs, output, expected = [str(src)], src, "output would overwrite its input"
    elif case == "two inputs, one output name":
        (src / "other").mkdir()
        write_image(src / "other" / "in.png", small)
        inputs, expected = [str(inp), str(src / "other" / "in.png")], "would be written for both"
    source_files = all_files(src)

    status, err = run(["upscale", *inputs, "-o", str(output), "--model", model, *extra], capsys)

    assert status == 1
    assert len(err) == 1, err
    assert err[0].startswith("sisr: error: ")
    assert expected in err[0]
    assert all_files(out_dir) == []  # no output, not even a temporary file
    assert all_files(src) == source_files
    assert not (tmp_path / "marker").exists()


def test_usage_errors_are_argparse_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upscale", "in.png", "--scale", "5"]) == 2
    assert "argument -s/--scale: invalid choice: 5" in capsys.readouterr().err
    assert main(["upscale", "in.png", "-o", "o.png", "-m", "x", "--tile", "0"]) == 2
    assert "--tile: must be at least 1" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sisr {sisr.__version__}"


# ----------------------------------------------------------------------------------------------------
# The installed entry points


@pytest.mark.slow
def test_console_script(tmp_path: Path, small: np.ndarray, checkpoint: Path, model: torch.nn.Module) -> None:
    script = Path(sys.executable).parent / "sisr"
    write_image(tmp_path / "in.bmp", small)
    done = subprocess.run(
        [
            script,
            "upscale",
            tmp_path / "in.bmp",
            "-o",
            tmp_path / "out.png",
            "-m",
            checkpoint,
            "--tile",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = f"{tmp_path / 'in.bmp'} -> {tmp_path / 'out.png'} (x2, {checkpoint})\n"
    assert (done.returncode, done.stdout, done.stderr) == (0, report, "")
    np.testing.assert_array_equal(
        read_image(tmp_path / "out.png").pixels, sisr.upscale(model, small, tile=16, overlap=8)
    )

    failed = subprocess.run(
        [sys.executable, "-m", "sisr", "upscale", tmp_path / "no.png", "-o", tmp_path / "x.png", "-m", "m"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    assert failed.stderr == f"sisr: error: {tmp_path / 'no.png'}: no such file or folder\n"
    assert not (tmp_path / "x.png").exists()


def test_progress_line_on_a_terminal(
    tmp_path: Path, small: np.ndarray, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()
    stderr.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stderr", stderr)
    write_image(tmp_path / "a.png", small)
    write_image(tmp_path / "b.png", small[:, ::-1])
    argv = ["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "o")]
    assert main([*argv, "-m", str(checkpoint)]) == 0
    text = stderr.getvalue()
    assert "[1/2] a.png" in text and "[2/2] b.png" in text
    assert text.endswith("[2/2] done\n")


def test_sigterm_while_writing_leaves_no_temporary_file(
    tmp_path: Path,
    small: np.ndarray,
    checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # SIGTERM arrives while the output's temporary file is half written: main's handler turns it into an
    # exception, atomic_write removes the temporary file, and the run ends with one line and status 143.
    import signal

    import sisr.upscaling
    from sisr.atomic import atomic_write

    def half_write(path: Path, pixels: np.ndarray) -> None:
        def write(tmp: str) -> None:
            Path(tmp).write_bytes(b"half an image")
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler raises at the next bytecode; never get past this loop
                time.sleep(0.01)
            raise AssertionError("SIGTERM did not interrupt the write")

        atomic_write(path, write)

    monkeypatch.setattr(sisr.upscaling, "write_image", half_write)
    write_image(tmp_path / "in.png", small)
    (tmp_path / "out").mkdir()
    before = signal.getsignal(signal.SIGTERM)
    argv = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out" / "x.png"), "-m", str(checkpoint)]
    assert main(argv) == 143
    assert capsys.readouterr().err == "sisr: error: terminated\n"
    assert all_files(tmp_path / "out") == []
    assert signal.getsignal(signal.SIGTERM) is before  # main restores the handler it replaced


def test_upscale_files_is_the_library_behind_the_command(
    tmp_path: Path, small: np.ndarray, checkpoint: Path, model: torch.nn.Module
) -> None:
    from sisr.upscaling import upscale_files

    write_image(tmp_path / "a.png", small)
    (tmp_path / "b.png").write_bytes(b"")
    started, reported = [], []
    results = upscale_files(
        [tmp_path / "a.png", tmp_path / "b.png"],
        tmp_path / "out",
        model=str(checkpoint),
        tile=16,
        on_start=lambda index, total, source: started.append((index, total, source.name)),
        on_result=reported.append,
    )
    assert started == [(0, 2, "a.png"), (1, 2, "b.png")]
    assert reported == results
    assert [(r.target.name, r.scale, r.error is None) for r in results] == [
        ("a.png", 2, True),
        ("b.png", 2, False),
    ]
    assert "b.png: file is empty" in str(results[1].error)
    # The one overlap default (inference's): 16, or half a smaller tile.
    expected = sisr.upscale(model, small, tile=16, overlap=8)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "a.png").pixels, expected)


def test_real_without_a_real_world_model_is_one_line(
    small: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.png"
    write_image(source, small)
    from sisr.shipped import shipped_models

    real = sorted(n for n in shipped_models() if n.endswith("-real"))
    if "seemore-t-x3-real" in real:
        pytest.skip("a seemore-t-x3-real model is shipped")
    status, lines = run(
        ["upscale", str(source), "--scale", "3", "--real", "-o", str(tmp_path / "out.png")], capsys
    )
    have = ", ".join(n.split("-")[-2] for n in real if n.startswith("seemore-t-")) or "none"
    assert status == 1
    assert lines == [
        f"sisr: error: no shipped real-world seemore-t model for x3 (shipped real-world: {have})"
    ]
    assert not (tmp_path / "out.png").exists()
