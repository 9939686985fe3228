"""sisr.runtime: the one device resolver, and freed memory reused rather than mapped afresh (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sisr import runtime
from sisr.errors import SisrError
from sisr.runtime import resolve_device

# Runs a small SeemoRe-T twice to warm up, then four more times, and prints the fewest minor page faults
# of those four: memory mapped afresh faults on every 4 KiB page it touches on every run, memory that is
# reused does not. The minimum, because a one-off allocation (a lazily made buffer, a thread's arena) can
# land in any single run.
_PROBE = """
import json, resource, sys, torch
if sys.argv[1] == "reuse":
    from sisr.runtime import reuse_freed_memory
    assert reuse_freed_memory()
from sisr.models import create_model
net = create_model("seemore-t", 2).eval()
x = torch.rand(4, 3, 96, 96)
faults = []
with torch.inference_mode():
    net(x)
    net(x)
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(min(faults)))
"""

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout)


@glibc
@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------------------
# resolve_device


def test_good_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda:3" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None, local_rank=3) == torch.device(expected)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with one CUDA device, as far as resolve_device can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_with_one_gpu(one_gpu: None) -> None:
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device(None, local_rank=0) == torch.device("cuda:0")
    with pytest.raises(
        SisrError, match=r"^device 'cuda:7' requested, but this machine has 1 CUDA device \(cuda:0"
    ):
        resolve_device("cuda:7")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu", "unknown device 'gpu' (use cpu, cuda, cuda:N or mps)"),
        ("gpu0", "unknown device 'gpu0'"),
        ("cuda:x", "unknown device 'cuda:x'"),
        ("", "unknown device ''"),
        ("\x00garbage\n", "unknown device"),
        ("meta", "unsupported device 'meta' (use cpu, cuda, cuda:N or mps)"),
        ("xpu", "unsupported device 'xpu'"),
    ],
)
def test_bad_device_names(name: str, message: str) -> None:
    with pytest.raises(SisrError) as err:
        resolve_device(name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_devices_this_machine_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", "cuda:7"):
        with pytest.raises(
            SisrError, match=f"^device '{name}' requested, but this machine has no usable CUDA"
        ):
            resolve_device(name)
    with pytest.raises(SisrError, match=r"^device 'mps' requested, but MPS is not available"):
        resolve_device("mps")


def test_every_caller_uses_it() -> None:
    # One resolver: the modules that take a device name import this one and define no other.
    import inspect

    from sisr import checkpoint, evaluate, train

    assert checkpoint.resolve_device is resolve_device and train.resolve_device is resolve_device
    assert "resolve_device" in inspect.getsource(evaluate)
    for module in (checkpoint, evaluate, train):
        assert "def resolve_device" not in inspect.getsource(module)
        assert "def _resolve_device" not in inspect.getsource(module)


_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2

processor\t: 1
model name\t: another name
flags\t\t: avx512f avx512_bf16
"""


def test_cpuinfo_names_the_first_processor_and_its_features() -> None:
    zen3 = runtime.parse_cpuinfo(_ZEN3)
    assert (zen3.name, zen3.family, zen3.model) == ("AMD EPYC", "25", "1")
    assert "avx512f" not in zen3.flags  # the second processor's entry is not read
    assert zen3.describe() == "AMD EPYC (family 25 model 1; AVX2, no AVX-512, no native bf16)"
    xeon = runtime.parse_cpuinfo(
        "cpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel Xeon\n"
        "flags\t\t: avx2 avx512f amx_bf16 amx_tile\n"
    )
    assert xeon.describe() == "Intel Xeon (family 6 model 143; AVX-512, native bf16 (AMX))"
    zen4 = runtime.parse_cpuinfo("model name : AMD EPYC\nflags : avx2 avx512f avx512_bf16\n")
    assert zen4.describe() == "AMD EPYC (AVX-512, native bf16)"
    assert runtime.parse_cpuinfo("").describe() == ""


def test_this_machines_cpu_is_read_once() -> None:
    assert runtime.cpu_info() is runtime.cpu_info()
    assert runtime.cpu_info().name  # /proc/cpuinfo's model name, or platform's name off Linux
