"""The ``sisr`` command's thread settings (:func:`sisr.runtime.configure_threads`, ``--threads N``).

OpenMP reads ``OMP_WAIT_POLICY`` when torch loads it, so the defaults are checked in fresh processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sisr.cli import THREADED, main

# Runs `sisr ARGV` in this fresh process, then reports the environment and torch's thread count.
_PROBE = """
import json, os, sys
from sisr.cli import main
status = main(sys.argv[1:])
import torch
print(json.dumps({
    "status": status,
    "policy": os.environ.get("OMP_WAIT_POLICY"),
    "omp_threads": os.environ.get("OMP_NUM_THREADS"),
    "torch_threads": torch.get_num_threads(),
}))
"""


def _probe(argv: list[str], **env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# `sisr lam` of a missing image fails (exit 1) after parsing and after importing torch: the settings
# are then in place, as for a command that runs.
_LAM = ["lam", "no-such-image.png", "-m", "seemore-t-x4", "--pos", "0", "0"]


@pytest.mark.slow
def test_the_command_waits_passively_by_default_and_keeps_the_users_settings() -> None:
    default = _probe(["models"])
    assert default["status"] == 0 and default["policy"] == "PASSIVE" and default["omp_threads"] is None
    own = _probe(["models"], OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert own["policy"] == "ACTIVE" and own["omp_threads"] == "1" and own["torch_threads"] == 1


@pytest.mark.slow
def test_threads_sets_the_thread_count() -> None:
    got = _probe([*_LAM, "--threads", "1"])
    assert got["status"] == 1 and got["omp_threads"] == "1" and got["torch_threads"] == 1
    assert got["policy"] == "PASSIVE"
    # --threads wins over the environment's OMP_NUM_THREADS; the user's wait policy stays.
    got = _probe([*_LAM, "--threads", "1"], OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")
    assert got["omp_threads"] == "1" and got["torch_threads"] == 1 and got["policy"] == "ACTIVE"


def test_threads_in_process_sets_torchs_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert main(["lam", "no-such.png", "-m", "seemore-t-x4", "--pos", "0", "0", "--threads", "1"]) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_threads_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upscale", "in.png", "-o", "out.png", "--threads", value]) == 2
    assert "--threads" in capsys.readouterr().err


def test_threads_only_where_networks_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert "models" not in THREADED and "prepare" not in THREADED
    assert main(["models", "--threads", "1"]) == 2
    capsys.readouterr()
    for name in sorted(THREADED):
        assert main([name, "--help"]) == 0
        assert "--threads N" in capsys.readouterr().out, name
