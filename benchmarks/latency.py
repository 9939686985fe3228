"""Speed against the peers, and latency and peak memory, of the networks on this machine.

Two tables (``--table speed|memory|both``, default both).

**Speed** (the README's "Speed" table): every implementation runs in its own long-lived worker process
(so that two sisr versions, spandrel and the official code coexist, each with its own memory), and the
driver asks the workers in turn, A, B, C, A, B, C, ..., ``--repeat`` rounds after one warm-up round, on
the same input (a crop of a held-out photograph, or noise without scikit-image) and the same weights
(the shipped file where there is one, else a seeded random network saved once). It prints each worker's
median time and its ratio to sisr fp32, then the issue's targets. Workers:

- ``sisr ref``: this sisr, fp32, every network's plain-PyTorch reference (``reference_paths()``);
- ``sisr fp32``: this sisr, fp32, with its fast paths (the default);
- ``sisr best``: this sisr at its best allowed settings: of fp32 and the precisions that
  :func:`sisr.precision.check_precision` allows for the architecture on this device (bf16 only where it
  is native), the one whose forward was fastest at load (two interleaved timed forwards each after a
  warm-up; a lower precision must be 5% faster than fp32), fast paths, the default layout;
- ``spandrel`` (``--spandrel DIR``, a folder where spandrel was installed with
  ``pip install --target DIR --no-deps spandrel einops safetensors``): spandrel's SeemoRe. spandrel
  imports torchvision for two architectures not used here, and torchvision does not import beside this
  torch, so the worker first puts a placeholder ``torchvision`` module (a few names, no code) into
  ``sys.modules``;
- ``official`` (``--official-seemore FILE``, a copy of ``basicsr/archs/seemore_arch.py`` from
  eduardzamfir/seemoredetails without its registry import, kept outside this repository; it needs
  einops, found in ``--spandrel DIR`` too), and ``--official-mma DIR`` as below;
- ``onnxruntime``: the network exported with :func:`sisr.export.export_onnx` (into a temporary folder,
  which takes minutes) and run by ONNX Runtime's CPU provider with as many threads (skipped without
  onnxruntime, with ``--no-onnx`` and with ``--quick``);
- ``today`` (``--baseline SRC``): another sisr checkout's ``src`` folder (with its compiled kernels),
  run with ``PYTHONPATH=SRC``, fp32 with its defaults.

Cells: SeemoRe-T and SeemoRe-L x4 at 320x180 (-> 1280x720) and 256x256, mma-s x4 at 128x128, MMA x2 (the
19.8M network) at 64x64; ``--threads N`` (default 1) for every worker. With more than one thread every
worker runs with ``OMP_WAIT_POLICY=PASSIVE`` unless it is set, as the ``sisr`` command does, so that a
waiting worker's threads do not spin on the cores of the one being timed. The run also checks that
spandrel's output on the shipped SeemoRe-T x4 file is bit-identical to sisr's for one image, and runs
spandrel on a batch of two.

**Memory**: every cell runs in a fresh subprocess, so that its peak memory is its own: "peak extra
memory" is the process's peak resident set size (``ru_maxrss``) at the end minus its resident size just
before the first forward pass (weights and Python already loaded). Times are the median of ``--repeat``
runs after one warm-up run, in eval mode under ``torch.inference_mode()`` (training-step rows: forward,
L1 loss, backward and an Adam step, in train mode). Rows:

- MMA (the paper's 19.8M ×2 network, and the ``mma-s`` preset ×4) on a 256×256 LR input, and ×2 on 64×64;
- SeemoRe T/B/L ×4 on a 256×256 LR input, batch 1 and batch 8, and batch 8 run as 8 single images;
- SeemoRe-T's batch-8 and training-step rows again with glibc's default malloc, which maps every large
  block afresh (see :mod:`sisr.runtime`); every other sisr row runs with
  ``sisr.runtime.reuse_freed_memory()``, as the ``sisr`` command does;
- optionally the official networks, from a copy of the official code you prepared yourself (nothing of
  it is in this repository): ``--official-mma DIR`` where ``DIR`` makes ``basicsr.archs.mma_arch``
  importable with ``mamba_ssm``'s CUDA ops replaced by their CPU reference (see tests/fixtures/README.md),
  and ``--official-seemore FILE`` as above. Rows that need them are skipped without them.

``--quick``: the speed table on SeemoRe-T x4 320x180 and mma-s x4 128x128 only, without onnxruntime.

Usage: python benchmarks/latency.py [--table speed|memory|both] [--quick] [--repeat N] [--threads N]
[--spandrel DIR] [--official-seemore FILE] [--official-mma DIR] [--baseline SRC] [--no-onnx]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from sisr.analysis.profile import machine
from sisr.cli.argtypes import positive_int
from sisr.models import PRESETS, create_model
from sisr.runtime import reuse_freed_memory

Cell = tuple[str, str, int, int, int, str]  # (description, builder key, scale, LR size, batch, mode)
# Cells that run a second time with glibc's default malloc ("<name>-glibc"), to show what
# sisr.runtime.reuse_freed_memory() buys.
GLIBC_TWINS = ("seemore-t-x4-256-b8", "seemore-t-x4-256-8x1", "seemore-t-x4-train")


def _with_glibc_twins(cells: dict[str, Cell]) -> dict[str, Cell]:
    """``cells`` with each of GLIBC_TWINS followed by its glibc-malloc twin."""
    out: dict[str, Cell] = {}
    for name, cell in cells.items():
        out[name] = cell
        if name in GLIBC_TWINS:
            out[f"{name}-glibc"] = (f"{cell[0]}, glibc's default malloc", *cell[1:])
    return out


# Every cell runs with sisr.runtime.reuse_freed_memory(), as the sisr command does, except those in
# GLIBC_MALLOC.
CELLS: dict[str, Cell] = _with_glibc_twins(
    {
        "mma-x2-64": ("MMA x2 (19.8M), 64x64", "mma", 2, 64, 1, "eval"),
        "official-mma-x2-64": ("official MMA x2, reference scan, 64x64", "official-mma", 2, 64, 1, "eval"),
        "mma-x2-256": ("MMA x2 (19.8M), 256x256", "mma", 2, 256, 1, "eval"),
        "mma-small-x4-256": ("mma-s x4 (num_feat 48, 6 blocks), 256x256", "mma-s", 4, 256, 1, "eval"),
        "seemore-t-x4-256": ("SeemoRe-T x4, 256x256", "seemore-t", 4, 256, 1, "eval"),
        "seemore-b-x4-256": ("SeemoRe-B x4, 256x256", "seemore-b", 4, 256, 1, "eval"),
        "seemore-l-x4-256": ("SeemoRe-L x4, 256x256", "seemore-l", 4, 256, 1, "eval"),
        "seemore-t-x4-256-b8": ("SeemoRe-T x4, 256x256, batch 8", "seemore-t", 4, 256, 8, "eval"),
        "seemore-t-x4-256-8x1": (
            "SeemoRe-T x4, 256x256, 8 images one by one",
            "seemore-t",
            4,
            256,
            8,
            "serial",
        ),
        "seemore-b-x4-256-b8": ("SeemoRe-B x4, 256x256, batch 8", "seemore-b", 4, 256, 8, "eval"),
        "seemore-l-x4-256-b8": ("SeemoRe-L x4, 256x256, batch 8", "seemore-l", 4, 256, 8, "eval"),
        "seemore-t-x4-train": ("SeemoRe-T x4 training step, 8x64x64", "seemore-t", 4, 64, 8, "train"),
        "official-seemore-t-x4-train": (
            "official SeemoRe-T x4 training step, 8x64x64",
            "official-seemore-t",
            4,
            64,
            8,
            "train",
        ),
    }
)
# The official code runs as its own scripts do, with the C library's allocator left as it is.
GLIBC_MALLOC = frozenset(
    {"official-mma-x2-64", "official-seemore-t-x4-train", *(f"{name}-glibc" for name in GLIBC_TWINS)}
)
QUICK = ("mma-x2-64", "official-mma-x2-64", "seemore-t-x4-256", "seemore-t-x4-256-b8", "seemore-t-x4-256-8x1")


def _import_file(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(key: str, scale: int, args: argparse.Namespace) -> nn.Module:
    if key == "official-mma":
        sys.path.insert(0, args.official_mma)
        from basicsr.archs.mma_arch import MMA  # type: ignore[import-not-found]

        return MMA(3, 3, upscale=scale, **PRESETS["mma"][1])
    if key == "official-seemore-t":
        official = _import_file("official_seemore", args.official_seemore)
        return official.SeemoRe(scale=scale, **PRESETS["seemore-t"][1])
    return create_model(key, scale)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_cell(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Runs one cell in this process and returns its median time (ms) and peak extra memory (MB)."""
    _, key, scale, size, batch, mode = CELLS[name]
    if name not in GLIBC_MALLOC:
        reuse_freed_memory()
    torch.manual_seed(0)
    model = _build(key, scale, args)
    x = torch.rand(batch, 3, size, size)
    if mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        target = torch.rand(batch, 3, size * scale, size * scale)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = (model(x) - target).abs().mean()
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                if mode == "serial":
                    for i in range(batch):
                        model(x[i : i + 1])
                else:
                    model(x)

    base = _rss_mb()
    times = []
    for _ in range(1 + args.repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"ms": 1000 * statistics.median(times[1:]), "peak_mb": max(peak - base, 0.0)}


# ---------------------------------------------------------------------------------------------------
# Speed: one long-lived worker process per implementation, asked in turn.

# name -> (description, preset, scale, LR height, LR width, shipped weights or None)
SpeedCell = tuple[str, str, int, int, int, str | None]
SPEED_CELLS: dict[str, SpeedCell] = {
    "seemore-t-x4-320x180": ("SeemoRe-T x4, 320x180 -> 1280x720", "seemore-t", 4, 180, 320, "seemore-t-x4"),
    "seemore-t-x4-256": ("SeemoRe-T x4, 256x256", "seemore-t", 4, 256, 256, "seemore-t-x4"),
    "seemore-l-x4-320x180": ("SeemoRe-L x4, 320x180 -> 1280x720", "seemore-l", 4, 180, 320, None),
    "seemore-l-x4-256": ("SeemoRe-L x4, 256x256", "seemore-l", 4, 256, 256, None),
    "mma-s-x4-128": ("mma-s x4, 128x128", "mma-s", 4, 128, 128, "mma-s-x4"),
    "mma-x2-64": ("MMA x2 (19.8M), 64x64", "mma", 2, 64, 64, None),
}
SPEED_QUICK = ("seemore-t-x4-320x180", "mma-s-x4-128")
# Worker name -> (column title, architectures it runs)
WORKERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ref": ("sisr ref", ("seemore", "mma")),
    "fp32": ("sisr fp32", ("seemore", "mma")),
    "best": ("sisr best", ("seemore", "mma")),
    "spandrel": ("spandrel", ("seemore",)),
    "official": ("official", ("seemore", "mma")),
    "onnx": ("onnxruntime", ("seemore", "mma")),
    "today": ("today", ("seemore", "mma")),
}
PEERS = ("spandrel", "official", "onnx", "today")
# (cell, faster worker, slower worker, target speed-up)
SPEED_TARGETS = (
    ("seemore-t-x4-320x180", "best", "spandrel", 1.5),
    ("mma-s-x4-128", "best", "today", 1.5),
    ("mma-x2-64", "best", "today", 1.5),
)
_REPLY = "@@sisr-bench "  # prefix of the workers' answers on stdout; any other line is a library's print


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _placeholder_torchvision() -> None:
    """A ``torchvision`` with the few names spandrel's module imports read; none of them is called here."""
    if "torchvision" in sys.modules:
        return
    tv, tf = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")

    def unavailable(*_a: object, **_k: object) -> None:
        raise NotImplementedError("placeholder torchvision (benchmarks/latency.py)")

    import enum

    fn.InterpolationMode = enum.Enum(
        "InterpolationMode", {"NEAREST": "nearest", "BILINEAR": "bilinear", "BICUBIC": "bicubic"}
    )  # type: ignore[attr-defined]
    fn.rotate = fn.normalize = fn.rgb_to_grayscale = unavailable  # type: ignore[attr-defined]
    tv.transforms, tf.functional = tf, fn  # type: ignore[attr-defined]
    sys.modules.update(
        {"torchvision": tv, "torchvision.transforms": tf, "torchvision.transforms.functional": fn}
    )


class _Worker:
    """This file run as ``--worker KIND``: loads one cell at a time and times one forward per request."""

    def __init__(self, kind: str, opts: dict[str, Any]) -> None:
        self.kind, self.opts = kind, opts
        self.run: Callable[[], Any] | None = None
        self.x: torch.Tensor | None = None
        self.onnx_files: dict[str, str] = {}
        self.tmp = tempfile.mkdtemp(prefix="sisr-bench-onnx-")
        torch.set_num_threads(opts["threads"])
        if kind == "spandrel" or (kind == "official" and opts.get("spandrel")):
            sys.path[:0] = [opts["spandrel"]]  # spandrel, and einops for the official file
        if kind == "spandrel":
            _placeholder_torchvision()
            from spandrel import ModelLoader  # noqa: F401  (fails now, not in the first cell)
        if kind == "onnx":
            import onnxruntime  # noqa: F401
        reuse_freed_memory()

    def hello(self) -> dict[str, Any]:
        import sisr

        where = str(Path(sisr.__file__).resolve().parent.parent)
        return {"sisr": where, "torch": torch.__version__, "threads": torch.get_num_threads()}

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        self.run = None
        gc.collect()
        x = torch.from_numpy(np.load(req["input"]))
        self.x = x
        weights, preset, scale, arch = req["weights"], req["preset"], req["scale"], req["arch"]
        info: dict[str, Any] = {}
        ctx: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
        if self.kind in ("ref", "fp32", "best", "today"):
            from sisr.checkpoint import load_model

            model = load_model(weights).eval()
            if self.kind == "ref":
                from sisr.models._fastpath import reference_paths

                ctx = reference_paths
            if self.kind == "best":
                precision, note = _best_precision(model, x)
                info["precision"] = note
                if precision != "fp32":
                    from sisr.precision import autocast

                    def ctx() -> contextlib.AbstractContextManager[None]:
                        return autocast(precision, torch.device("cpu"))  # type: ignore[arg-type]
        elif self.kind == "spandrel":
            from spandrel import ModelLoader

            model = ModelLoader().load_from_file(weights).model.eval()
        elif self.kind == "official":
            model = _official(arch, preset, scale, self.opts)
            from sisr.checkpoint import load_model

            model.load_state_dict(load_model(weights).state_dict(), strict=True)
            model.eval()
        else:  # onnx
            import onnxruntime as ort

            from sisr.export import export_onnx

            if weights not in self.onnx_files:
                path = os.path.join(self.tmp, f"{len(self.onnx_files)}.onnx")
                t0 = time.perf_counter()
                export_onnx(weights, path)
                info["export_s"] = round(time.perf_counter() - t0, 1)
                self.onnx_files[weights] = path
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.opts["threads"]
            so.inter_op_num_threads = 1
            session = ort.InferenceSession(self.onnx_files[weights], so, providers=["CPUExecutionProvider"])
            feed = {"input": x.numpy()}
            self.run = lambda: session.run(None, feed)[0]
            return {"ok": True, **info}

        def run() -> torch.Tensor:
            with torch.inference_mode(), ctx():
                return model(x).float()

        self.run = run
        return {"ok": True, **info}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        op = req["op"]
        if op == "hello":
            return self.hello()
        if op == "load":
            return self.load(req)
        if op == "time":
            assert self.run is not None
            t0 = time.perf_counter()
            self.run()
            return {"ms": 1000 * (time.perf_counter() - t0)}
        if op == "save":
            assert self.run is not None
            out = self.run()
            np.save(req["path"], out.numpy() if isinstance(out, torch.Tensor) else out)
            return {"ok": True}
        if op == "batch2":  # spandrel on a batch of two images
            from spandrel import ModelLoader

            net = ModelLoader().load_from_file(req["weights"]).model.eval()
            x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            try:
                with torch.inference_mode():
                    y = net(x)
            except Exception as e:  # what a user of spandrel sees
                return {"error": _one_line(e)}
            return {"ok": True, "shape": list(y.shape)}
        if op == "rss":
            return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        raise ValueError(f"unknown op {op!r}")

    def serve(self, stdin: IO[str], stdout: IO[str]) -> None:
        for line in stdin:
            try:
                reply = self.handle(json.loads(line))
            except Exception as e:  # reported to the driver, which skips this worker's cell
                reply = {"error": _one_line(e)}
            stdout.write(_REPLY + json.dumps(reply) + "\n")
            stdout.flush()


def _best_precision(model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """The fastest of the precisions the gate allows for `model` on this CPU, and a note of the times.

    fp32 and each of bf16, fp16 that :func:`sisr.precision.check_precision` allows run on `x` in turn, a
    warm-up round and two timed rounds, each keeping its fastest; a lower precision wins only when it is
    at least 5% faster than fp32 (a lower precision is not always faster: where a network's fast path
    does not run under autocast, its reference does).
    """
    from sisr.errors import SisrError
    from sisr.models import arch_of
    from sisr.precision import autocast, check_precision

    allowed = ["fp32"]
    for precision in ("bf16", "fp16"):
        try:
            check_precision(precision, arch=arch_of(model), device=torch.device("cpu"))
        except SisrError:
            continue
        allowed.append(precision)
    if len(allowed) == 1:
        return "fp32", "fp32 (the only precision the gate allows on this CPU)"
    ms: dict[str, float] = {p: math.inf for p in allowed}
    for round_ in range(3):  # a warm-up round, then the fastest of two interleaved rounds
        for precision in allowed:
            with torch.inference_mode(), autocast(precision, torch.device("cpu")):  # type: ignore[arg-type]
                t0 = time.perf_counter()
                model(x)
                if round_ > 0:
                    ms[precision] = min(ms[precision], 1000 * (time.perf_counter() - t0))
    # A lower precision only where it is clearly faster (by 5%): within noise, fp32 is the more exact.
    best = min(ms, key=ms.__getitem__)
    if ms[best] > 0.95 * ms["fp32"]:
        best = "fp32"
    times = ", ".join(f"{p} {t:,.0f} ms" for p, t in ms.items())
    return (
        best,
        f"{best}, of the allowed precisions the fastest by 5% (fastest of 2 forwards each: {times})",
    )


def _official(arch: str, preset: str, scale: int, opts: dict[str, Any]) -> nn.Module:
    if arch == "seemore":
        if not opts.get("official_seemore"):
            raise ValueError("no --official-seemore")
        official = _import_file("official_seemore", opts["official_seemore"])
        return official.SeemoRe(scale=scale, **PRESETS[preset][1])
    if not opts.get("official_mma"):
        raise ValueError("no --official-mma")
    sys.path.insert(0, opts["official_mma"])
    from basicsr.archs.mma_arch import MMA  # type: ignore[import-not-found]

    return MMA(3, 3, upscale=scale, **PRESETS[preset][1])


class _Client:
    """The driver's end of one worker process."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        self.kind, self.title = kind, WORKERS[kind][0]
        opts = {
            "threads": args.threads,
            "spandrel": args.spandrel,
            "official_seemore": args.official_seemore,
            "official_mma": args.official_mma,
        }
        env = dict(os.environ)
        if args.threads > 1:
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["OMP_NUM_THREADS"] = str(args.threads)
        if kind == "today":
            env["PYTHONPATH"] = args.baseline
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.arches = set(WORKERS[kind][1])
        if kind == "official":
            self.arches = {
                a for a, opt in (("seemore", args.official_seemore), ("mma", args.official_mma)) if opt
            }

    def ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"error": "the worker exited"}
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                return json.loads(line[len(_REPLY) :])
        return {"error": "the worker exited"}

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _uint8(path: str) -> Any:
    import numpy as np

    y = np.load(path)[0].transpose(1, 2, 0)
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


def _speed_input(h: int, w: int, path: str) -> None:
    """A crop of a held-out photograph (noise without scikit-image), (1, 3, h, w) float32 in [0, 1]."""
    import numpy as np

    try:
        from sisr.heldout import photo

        img = photo("astronaut")[40 : 40 + h, 100 : 100 + w]
        x = img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    except Exception:  # scikit-image missing
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    np.save(path, np.ascontiguousarray(x))


def _speed_weights(preset: str, scale: int, shipped: str | None, folder: str) -> str:
    if shipped is not None:
        from sisr.shipped import shipped_models

        return str(shipped_models()[shipped])
    from sisr.checkpoint import save_safetensors
    from sisr.models import SCALE_ARG

    arch, preset_args = PRESETS[preset]
    torch.manual_seed(0)
    net = create_model(preset, scale)
    path = os.path.join(folder, f"{preset}-x{scale}.safetensors")
    save_safetensors(path, arch=arch, args={**preset_args, SCALE_ARG[arch]: scale}, params=net.state_dict())
    return path


@contextlib.contextmanager
def _workers(args: argparse.Namespace) -> Iterator[list[_Client]]:
    kinds = ["ref", "fp32", "best"]
    skipped = []
    for kind, option, what in (
        ("spandrel", args.spandrel, "--spandrel DIR"),
        (
            "official",
            args.official_seemore or args.official_mma,
            "--official-seemore FILE / --official-mma DIR",
        ),
        (
            "onnx",
            not args.no_onnx and not args.quick and importlib.util.find_spec("onnxruntime") is not None,
            "onnxruntime; off with --quick and --no-onnx",
        ),
        ("today", args.baseline, "--baseline SRC"),
    ):
        (kinds if option else skipped).append(kind if option else f"{WORKERS[kind][0]} (needs {what})")
    clients = [_Client(kind, args) for kind in kinds]
    try:
        alive = []
        for c in clients:
            hello = c.ask(op="hello")
            if "error" in hello:
                skipped.append(f"{c.title} ({hello['error']})")
                c.close()
            else:
                alive.append(c)
                print(
                    f"- {c.title}: sisr from {hello['sisr']}, torch {hello['torch']}, "
                    f"{hello['threads']} thread(s)"
                )
        for line in skipped:
            print(f"- skipped: {line}")
        yield alive
    finally:
        for c in clients:
            c.close()


def speed_table(args: argparse.Namespace) -> None:
    """Prints the interleaved speed table, the targets and the spandrel checks."""
    names = SPEED_QUICK if args.quick else tuple(SPEED_CELLS)
    torch.set_num_threads(args.threads)  # the driver only compares outputs; machine() names this count
    policy = os.environ.get("OMP_WAIT_POLICY", "PASSIVE" if args.threads > 1 else "unset")
    print(f"## Speed: {machine()}")
    print(
        f"{args.threads} thread(s) per worker, OMP_WAIT_POLICY {policy}; median of {args.repeat} "
        "interleaved rounds after one warm-up round\n"
    )
    medians: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    psnr_best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sisr-bench-") as tmp, _workers(args) as clients:
        print()
        for name in names:
            label, preset, scale, h, w, shipped = SPEED_CELLS[name]
            arch = PRESETS[preset][0]
            weights = _speed_weights(preset, scale, shipped, tmp)
            x_path = os.path.join(tmp, f"{name}.npy")
            _speed_input(h, w, x_path)
            active = []
            for c in clients:
                if arch not in c.arches:
                    continue
                r = c.ask(op="load", input=x_path, weights=weights, preset=preset, scale=scale, arch=arch)
                if "error" in r:
                    notes.append(f"{c.title} skipped on {label}: {r['error']}")
                    continue
                if "precision" in r:
                    notes.append(f"{c.title} on {label}: {r['precision']}")
                if "export_s" in r:
                    notes.append(f"onnxruntime on {label}: export and verification took {r['export_s']} s")
                active.append(c)
            times: dict[str, list[float]] = {c.kind: [] for c in active}
            for round_ in range(1 + args.repeat):
                for c in list(active):
                    r = c.ask(op="time")
                    if "error" in r:
                        notes.append(f"{c.title} failed on {label}: {r['error']}")
                        active.remove(c)
                        times.pop(c.kind)
                    elif round_ > 0:
                        times[c.kind].append(r["ms"])
            medians[name] = {k: statistics.median(v) for k, v in times.items() if v}
            _compare_outputs(name, label, active, tmp, weights, shipped, psnr_best, notes)
            cols = [f"{WORKERS[k][0]} {v:,.0f} ms" for k, v in medians[name].items()]
            print(f"- {label}: {', '.join(cols)}", flush=True)
        for c in clients:
            r = c.ask(op="rss")
            if "peak_mb" in r:
                notes.append(f"{c.title} worker: peak resident memory {r['peak_mb']:,.0f} MB over its cells")

    present = [k for k in WORKERS if any(k in m for m in medians.values())]
    print("\n| network, input | " + " | ".join(WORKERS[k][0] for k in present) + " |")
    print("|---|" + "---:|" * len(present))
    for name, m in medians.items():
        base = m.get("fp32")
        cells = []
        for k in present:
            if k not in m:
                cells.append("")
            elif base is None or k == "fp32":
                cells.append(f"{m[k]:,.0f} ms")
            else:
                cells.append(f"{m[k]:,.0f} ms ({m[k] / base:.2f}x)")
        print(f"| {SPEED_CELLS[name][0]} | " + " | ".join(cells) + " |")
    print("\n(in brackets: the time as a multiple of sisr fp32's; below 1 is faster)\n")

    for name, fast, slow, target in SPEED_TARGETS:
        m = medians.get(name, {})
        if fast in m and slow in m:
            ratio = m[slow] / m[fast]
            verdict = "meets" if ratio >= target else "misses"
            extra = ""
            if slow == "spandrel" and name in psnr_best:
                db = psnr_best[name]
                extra = f"; output {db:.1f} dB from sisr ref ({'meets' if db >= 45 else 'misses'} 45 dB)"
            print(
                f"- {SPEED_CELLS[name][0]}: sisr best / {WORKERS[slow][0]} {ratio:.2f}x faster "
                f"({verdict} the target of {target:g}x){extra}"
            )
    for name, m in medians.items():
        for ours in ("best", "fp32"):
            for peer in (*PEERS, "ref") if ours == "fp32" else PEERS:
                if ours in m and peer in m and m[ours] > m[peer]:
                    notes.append(
                        f"slower than a peer: {WORKERS[ours][0]} on {SPEED_CELLS[name][0]} takes "
                        f"{m[ours] / m[peer]:.2f}x the time of {WORKERS[peer][0]}"
                    )
    for line in notes:
        print(f"- note: {line}")


def _compare_outputs(
    name: str,
    label: str,
    active: list[_Client],
    tmp: str,
    weights: str,
    shipped: str | None,
    psnr_best: dict[str, float],
    notes: list[str],
) -> None:
    """sisr best against sisr ref (PSNR of uint8 outputs); on the shipped SeemoRe-T, spandrel against sisr."""
    import numpy as np

    from sisr.metrics import psnr

    by_kind = {c.kind: c for c in active}
    if name not in (t[0] for t in SPEED_TARGETS) and not (shipped and "spandrel" in by_kind):
        return
    saved: dict[str, str] = {}
    for kind in ("ref", "fp32", "best", "spandrel"):
        if kind in by_kind:
            path = os.path.join(tmp, f"{name}-{kind}.npy")
            if "error" not in by_kind[kind].ask(op="save", path=path):
                saved[kind] = path
    if "ref" in saved and "best" in saved:
        db = psnr(_uint8(saved["best"]), _uint8(saved["ref"]))
        psnr_best[name] = db
        notes.append(f"sisr best vs sisr ref on {label}: {db:.1f} dB PSNR (uint8 outputs)")
    if shipped and "spandrel" in saved:
        sp = np.load(saved["spandrel"])
        for kind in ("ref", "fp32"):
            if kind in saved:
                ours = np.load(saved[kind])
                same = (
                    "bit-identical"
                    if np.array_equal(sp, ours)
                    else f"max abs diff {np.abs(sp - ours).max():.3g}"
                )
                notes.append(f"spandrel vs {WORKERS[kind][0]} on the shipped {shipped} file, {label}: {same}")
        r = by_kind["spandrel"].ask(op="batch2", weights=weights)
        if "error" in r:
            notes.append(f"spandrel on a batch of two (shipped {shipped}, 32x32): fails with {r['error']}")
        else:
            notes.append(f"spandrel on a batch of two (shipped {shipped}, 32x32): runs, output {r['shape']}")


def memory_table(args: argparse.Namespace) -> None:
    """Prints the latency and peak-memory table, one fresh subprocess per cell."""
    names = QUICK if args.quick else tuple(CELLS)
    print(f"## Latency and memory: {machine()}\n")
    print("| network | time | peak extra memory |")
    print("|---|---:|---:|")
    results: dict[str, dict[str, float]] = {}
    for name in names:
        label, key = CELLS[name][0], CELLS[name][1]
        if key == "official-mma" and not args.official_mma:
            continue
        if key.startswith("official-seemore") and not args.official_seemore:
            continue
        cmd = [sys.executable, __file__, "--cell", name, "--repeat", str(args.repeat)]
        if args.official_mma:
            cmd += ["--official-mma", args.official_mma]
        if args.official_seemore:
            cmd += ["--official-seemore", args.official_seemore]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {label} | failed: {done.stderr.strip().splitlines()[-1:]} | |")
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"| {label} | {r['ms']:,.0f} ms | {r['peak_mb']:,.0f} MB |", flush=True)

    print()
    # (label, slower cell, faster cell, target speed-up or None)
    ratios: list[tuple[str, str, str, float | None]] = [
        ("MMA x2 64x64, official with reference scan / sisr", "official-mma-x2-64", "mma-x2-64", 10.0),
        ("SeemoRe-T x4 batch 8: one by one / batched", "seemore-t-x4-256-8x1", "seemore-t-x4-256-b8", 2.0),
        (
            "SeemoRe-T x4 training step: official / sisr",
            "official-seemore-t-x4-train",
            "seemore-t-x4-train",
            1.0,
        ),
    ]
    ratios += [(f"{CELLS[n][0]}: glibc's malloc / reused memory", f"{n}-glibc", n, None) for n in GLIBC_TWINS]
    for label, slow, fast, target in ratios:
        if slow in results and fast in results:
            ratio = results[slow]["ms"] / results[fast]["ms"]
            if target is None:
                print(f"- {label}: {ratio:.1f}x")
            else:
                verdict = "meets" if ratio >= target else "misses"
                print(f"- {label}: {ratio:.1f}x ({verdict} the target of {target:g}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--table", choices=("speed", "memory", "both"), help="default: both; with --quick, speed"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the fast rows and cells, without onnxruntime (its export takes minutes): the speed "
        "table in under 2 minutes on an idle machine",
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=3, help="timed runs (rounds) per cell after one warm-up"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=1, metavar="N", help="threads per speed worker (default: 1)"
    )
    parser.add_argument(
        "--official-mma", metavar="DIR", help="folder making basicsr.archs.mma_arch importable"
    )
    parser.add_argument("--official-seemore", metavar="FILE", help="copy of the official seemore_arch.py")
    parser.add_argument("--spandrel", metavar="DIR", help="folder where spandrel is installed (--target)")
    parser.add_argument("--baseline", metavar="SRC", help="another sisr checkout's src folder ('today')")
    parser.add_argument("--no-onnx", action="store_true", help="no onnxruntime column")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one memory cell, print JSON
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # internal: KIND OPTIONS-JSON
    args = parser.parse_args()
    if args.worker:
        kind, opts = args.worker
        try:
            worker = _Worker(kind, json.loads(opts))
        except Exception as e:  # e.g. spandrel or onnxruntime missing: the driver skips this worker
            error = _one_line(e)
            for line in sys.stdin:
                del line
                print(_REPLY + json.dumps({"error": error}), flush=True)
            return
        worker.serve(sys.stdin, sys.stdout)
        return
    if args.cell:
        print(json.dumps(run_cell(args.cell, args)))
        return
    if args.table is None:
        args.table = "speed" if args.quick else "both"
    if args.table in ("speed", "both"):
        speed_table(args)
    if args.table in ("memory", "both"):
        if args.table == "both":
            print()
        memory_table(args)


if __name__ == "__main__":
    main()
