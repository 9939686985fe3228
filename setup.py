"""Build of the optional compiled selective-scan kernel (everything else is in pyproject.toml).

The fused CPU kernel (src/sisr/ops/csrc/scan_cpu.cpp) is compiled once per instruction set into
separate modules, ``sisr.ops._scan_cpu`` (portable), ``sisr.ops._scan_cpu_avx2`` and
``sisr.ops._scan_cpu_avx512`` (x86-64 only); at run time :mod:`sisr.ops._fused` loads the best one the
CPU supports. The kernel is optional: if torch is missing at build time, or a compiler is missing or
fails, the build prints a warning and the package installs without it (sisr then falls back to a
slower plain-PyTorch scan). Build it with torch already installed::

    pip install --no-build-isolation -e .

Set ``SISR_NO_EXTENSION=1`` to skip the kernel on purpose.
"""

from __future__ import annotations

import os
import platform
import sys
import traceback

from setuptools import setup
from setuptools.command.build_ext import build_ext

_SOURCE = "src/sisr/ops/csrc/scan_cpu.cpp"
_ISA_FLAGS = {  # module suffix -> compiler flags; CPU_CAPABILITY selects ATen's vector implementation
    "": [],
    "_avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "_avx512": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
        "-mf16c",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
    ],
}


def _warn(message: str) -> None:
    bar = "=" * 78
    print(f"\n{bar}\nWARNING (sisr): {message}\n{bar}\n", file=sys.stderr, flush=True)


def _extensions() -> tuple[list, dict]:
    """Returns (ext_modules, cmdclass); empty when the kernel cannot or should not be built."""
    if os.environ.get("SISR_NO_EXTENSION"):
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except Exception as exc:  # torch missing (e.g. build isolation): install without the kernel
        _warn(
            f"torch is not importable at build time ({exc}); installing without the compiled scan "
            "kernel. Install torch first, then `pip install --no-build-isolation -e .`."
        )
        return [], {}

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    modules = []
    for suffix, flags in _ISA_FLAGS.items():
        if suffix and not x86:
            continue
        modules.append(
            CppExtension(
                name=f"sisr.ops._scan_cpu{suffix}",
                sources=[_SOURCE],
                extra_compile_args=["-O3", "-g0", "-std=c++17", *openmp, *flags],
                extra_link_args=openmp,
            )
        )

    class OptionalBuildExt(BuildExtension):
        """BuildExtension that never fails the install: a module that does not build is skipped."""

        def finalize_options(self) -> None:
            super().finalize_options()
            # One variant at a time: all of them compile the same source to the same object file, so
            # building them side by side races (a "portable" module could end up with AVX2 code).
            self.parallel = None

        def run(self) -> None:
            try:
                super().run()
            except (Exception, SystemExit):
                _warn(
                    "building the compiled selective-scan kernel failed; sisr is installed without it "
                    "and will use the slower plain-PyTorch scan.\n" + traceback.format_exc(limit=3)
                )

        def build_extension(self, ext) -> None:  # ext: setuptools Extension
            try:
                super().build_extension(ext)
            except (Exception, SystemExit) as exc:
                _warn(f"could not build {ext.name} ({type(exc).__name__}: {exc}); skipping it.")

    return modules, {"build_ext": OptionalBuildExt}


_modules, _cmdclass = _extensions()
setup(ext_modules=_modules, cmdclass=_cmdclass or {"build_ext": build_ext})
