"""sisr.runtime: freed memory is reused rather than mapped afresh (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sisr import runtime

# Runs a small SeemoRe-T three times and prints the minor page faults of the third run: memory mapped
# afresh faults on every 4 KiB page it touches, memory that is reused does not.
_PROBE = """
import json, resource, sys, torch
if sys.argv[1] == "reuse":
    from sisr.runtime import reuse_freed_memory
    assert reuse_freed_memory()
from sisr.models import create_model
net = create_model("seemore-t", 2).eval()
x = torch.rand(4, 3, 96, 96)
with torch.inference_mode():
    net(x)
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout)


@glibc
def test_freed_activations_are_reused_instead_of_mapped_again() -> None:
    default = _faults("default")
    assert default > 5_000  # glibc unmapped the activations of the second run: they fault again
    assert _faults("reuse") < default / 10


@glibc
def test_the_command_line_applies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from sisr import cli

    calls = []
    monkeypatch.setattr(runtime, "reuse_freed_memory", lambda: calls.append(True))  # read when a command runs
    assert cli.main(["models"]) == 0
    assert calls == [True]


def test_it_says_whether_it_applied() -> None:
    assert runtime.reuse_freed_memory() is sys.platform.startswith("linux")
