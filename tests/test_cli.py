"""The dispatcher (:mod:`sisr.cli`): lazy imports, usage errors, one line per error, Ctrl-C and SIGTERM.

Each command's own behaviour is tested beside it: ``test_cli_upscale.py``, ``test_cli_config.py`` (train
and test), ``test_evaluate.py``, ``test_prepare.py`` and ``test_shipped.py`` (models).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sisr
import sisr.cli
from sisr.cli import COMMANDS, main
from sisr.errors import SisrError

_HELP_PROBE = """
import contextlib, io, json, sys
import sisr
names = dir(sisr)
from sisr.cli import COMMANDS, main
seen = {"import sisr": "torch" in sys.modules}
helps = [[name, "--help"] for name in COMMANDS]
for argv in [["--help"], ["--version"], *helps, ["prepare", "lr", "--help"]]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(argv)
    seen[" ".join(argv)] = ("torch" in sys.modules, code, len(out.getvalue()) > 0)
seen["names"] = names
sisr.load_model  # a public name imports its module on first use
seen["after sisr.load_model"] = "torch" in sys.modules
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_help_answers_without_importing_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout)
    assert seen.pop("import sisr") is False
    assert set(sisr.__all__) <= set(seen.pop("names"))
    assert seen.pop("after sisr.load_model") is True  # the probe is able to see torch
    assert set(seen) == {"--help", "--version", *(f"{name} --help" for name in COMMANDS), "prepare lr --help"}
    for argv, (torch_loaded, code, printed) in seen.items():
        assert (torch_loaded, code, printed) == (False, 0, True), argv


def test_public_names_resolve_on_first_use_and_dir_lists_them() -> None:
    for name in sisr.__all__:
        assert getattr(sisr, name) is not None
        assert name in dir(sisr)
    assert sisr.SisrError is SisrError
    assert callable(sisr.upscale) and callable(sisr.load_model) and callable(sisr.create_model)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sisr.nope  # noqa: B018


def test_every_command_is_listed_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (module, help_line) in COMMANDS.items():
        assert f"{name}  " in out and help_line in out
        assert module == f"sisr.cli.{name}"


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err
    assert main(["upscal"]) == 2
    assert "argument COMMAND: invalid choice: 'upscal'" in capsys.readouterr().err
    assert main(["--bogus", "models"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["models", "extra"]) == 2
    assert "usage: sisr models" in capsys.readouterr().err


def test_a_sisr_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sisr.cli.models

    def fail(args: object) -> int:
        raise SisrError("first line\n  second line")

    monkeypatch.setattr(sisr.cli.models, "run", fail)
    assert main(["models"]) == 1
    assert capsys.readouterr().err == "sisr: error: first line second line\n"


@pytest.mark.parametrize("command", ["upscale", "evaluate", "lam"])
def test_a_precision_the_gate_refuses_is_one_line(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # fp16 where the device would run it: the measured gate refuses it for SeemoRe, before any file.
    import sisr.precision
    from sisr.data.images import write_image

    monkeypatch.setattr(sisr.precision, "device_supports", lambda precision, device: True)
    source, out = tmp_path / "in.png", tmp_path / "out"
    write_image(source, np.full((32, 32, 3), 100, np.uint8))
    argv = {
        "upscale": ["upscale", str(source), "-o", str(out / "o.png"), "-m", "seemore-t-x2"],
        "evaluate": ["evaluate", "-m", "seemore-t-x2", "--data", str(tmp_path / "none")],
        "lam": ["lam", str(source), "-m", "seemore-t-x2", "--pos", "0", "0", "--out", str(out)],
    }[command]
    assert main([*argv, "--precision", "fp16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sisr: error: precision fp16 is not allowed for seemore" in err, err
    assert not out.exists()


def test_ctrl_c_while_importing_a_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A KeyboardInterrupt can arrive during the imports (torch's take seconds): one line, status 130.
    def interrupted(name: str) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert main(["upscale", "x.png"]) == 130
    assert capsys.readouterr() == ("", "sisr: error: interrupted\n")


def test_ctrl_c_during_an_import_waits_for_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Raised inside an import, a KeyboardInterrupt can meet C code that turns it into an ImportError
    # (numpy) or aborts the process (torch's C++): it is raised as soon as the import is over.
    (tmp_path / "slow_import.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "for _ in range(20):\n"
        "    time.sleep(0.01)\n"
        "DONE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reached = []

    def command(argv: list[str]) -> int:
        import slow_import

        reached.append(slow_import.DONE)
        for _ in range(100):
            time.sleep(0.01)
        reached.append("after the interrupt")
        return 0

    monkeypatch.setattr(sisr.cli, "run_command", command)
    monkeypatch.delitem(sys.modules, "slow_import", raising=False)
    assert main([]) == 130
    assert capsys.readouterr() == ("", "sisr: error: interrupted\n")
    assert reached == [True]


def test_an_interrupt_that_python_would_swallow_is_raised_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C landing in a __del__ or weakref callback (the import lock has one): Python prints
    # "Exception ignored in ..." and carries on. main raises it again, outside the callback.
    class Finalised:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    def command(argv: list[str]) -> int:
        Finalised()
        for _ in range(200):
            time.sleep(0.01)
        return 0

    monkeypatch.setattr(sisr.cli, "run_command", command)
    assert main([]) == 130
    assert capsys.readouterr() == ("", "sisr: error: interrupted\n")


def test_a_keyboard_interrupt_turned_into_another_error_by_c_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # numpy's C import turns a KeyboardInterrupt into "ImportError: ... could not import module": after a
    # real SIGINT, whatever the exception, the run was interrupted.
    def command(argv: list[str]) -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            raise ImportError("PyCapsule_Import could not import module") from None
        return 0

    monkeypatch.setattr(sisr.cli, "run_command", command)
    assert main([]) == 130
    assert capsys.readouterr() == ("", "sisr: error: interrupted\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


# ---------------------------------------------------------------------------------------------------------
# Real signals, sent to a real `python -m sisr upscale` at moments from the imports to the writing


@pytest.fixture(scope="module")
def upscale_job(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The arguments of a run over a folder of images that takes a few seconds."""
    import torch

    from sisr.data.images import write_image
    from sisr.models import create_model

    root = tmp_path_factory.mktemp("job")
    torch.manual_seed(0)
    torch.save(create_model("seemore-t", 2).state_dict(), root / "net.pth")
    (root / "in").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(root / "in" / f"{i}.png", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    return [str(root / "in"), "-m", str(root / "net.pth"), "--tile", "48"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "delay"),
    [
        (signal.SIGINT, 0.3),  # while torch is being imported (seconds on a busy machine)
        (signal.SIGINT, 1.5),
        (signal.SIGINT, None),  # once the first image is written: during the network or a write
        (signal.SIGTERM, 0.3),
        (signal.SIGTERM, None),
    ],
)
def test_a_signal_at_any_moment_gives_one_line_and_no_temporary_file(
    upscale_job: list[str], tmp_path: Path, sig: signal.Signals, delay: float | None
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sisr", "upscale", *upscale_job, "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = ""
    if delay is None:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "INPUT -> OUTPUT (x2, MODEL)" once the first image is written
        assert " -> " in first
    else:
        time.sleep(delay)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    stdout = first + stdout
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal")  # a very fast machine: nothing to interrupt
    status, word = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}[sig]
    assert stderr == f"sisr: error: {word}\n"
    # CPython ends a process by SIGINT itself (which shells show as status 130, too) when the
    # KeyboardInterrupt passed through C code that ran Python code, as torch's import does.
    assert proc.returncode == status or (sig == signal.SIGINT and proc.returncode == -signal.SIGINT)
    written = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert all(not name.startswith(".") for name in written), written  # no hidden .tmp left
    assert len(stdout.splitlines()) == len(written)  # every reported file is there, and only those
    if delay is None:
        assert 1 <= len(written) < 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_worker_ends_quietly_on_sigterm() -> None:
    # Data loader and process pool workers are forked with main's SIGTERM handler: in them it must not
    # raise (a traceback per worker), but end the worker as the default action would.
    restore = sisr.cli._catch_signals([])
    try:
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                time.sleep(30)
            except BaseException:
                os._exit(3)
            os._exit(0)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    finally:
        restore()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_a_signal_still_waiting_when_the_command_ends_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SIGTERM during an import waits for its end; the command finishes first: still status 143.
    (tmp_path / "last_import.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "last_import", raising=False)

    def command(argv: list[str]) -> int:
        import last_import  # noqa: F401

        return 0

    monkeypatch.setattr(sisr.cli, "run_command", command)
    assert main([]) == 143
    assert capsys.readouterr() == ("", "sisr: error: terminated\n")


@pytest.mark.slow
def test_a_second_ctrl_c_while_torch_is_imported_stops_at_once(tmp_path: Path) -> None:
    # The first waits for the end of torch's import (seconds on a busy machine); the second ends the run.
    argv = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-m", "seemore-t-x2"]
    proc = subprocess.Popen([sys.executable, "-m", "sisr", *argv], stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert stderr == "sisr: error: interrupted\n"
    assert proc.returncode in (130, -signal.SIGINT)
    assert list(tmp_path.iterdir()) == []
