"""The ``sisr`` command line: parses, dispatches, and turns every error into one line.

Each command is a small module of this package, named in :data:`COMMANDS`, that declares its arguments
(``add_arguments(parser)``) and carries them out (``run(args) -> int``) by calling one library function.
A module may also define ``parse_args(parser, argv)`` when plain argparse does not fit (config overrides
anywhere after CONFIG). Only the module of the command that runs is imported, and it imports torch only
inside ``run``, so ``sisr --help`` and ``sisr COMMAND --help`` answer at once.

:func:`main` turns every :class:`~sisr.errors.SisrError` into one line ``sisr: error: <message>`` on
stderr and exit status 1, without a traceback. Ctrl-C at any moment, imports included, gives
``sisr: error: interrupted`` and status 130; SIGTERM gives ``sisr: error: terminated`` and status 143,
after every file being written has removed its temporary file. Usage mistakes (unknown option, missing
argument) are argparse's: usage and a message on stderr, exit status 2.

Before a command's module can import torch, :func:`sisr.runtime.configure_threads` sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it; every command that runs networks takes
``--threads N`` (:data:`THREADED`), which sets the number of CPU threads.

This module imports almost nothing at the top (``sisr`` and ``python -m sisr`` import it before
:func:`main` can catch a Ctrl-C); everything else is imported inside :func:`main`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from sisr.errors import SisrError

__all__ = ["COMMANDS", "Terminated", "error", "main", "run_command", "warn"]

# Command name -> (module, one-line help). Nothing else is imported until a command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "upscale": ("sisr.cli.upscale", "super-resolve images"),
    "models": ("sisr.cli.models", "list the shipped models"),
    "train": ("sisr.cli.train", "train a network from a BasicSR-style option file"),
    "evaluate": ("sisr.cli.evaluate", "score a model on benchmark sets (PSNR/SSIM as the papers)"),
    "test": ("sisr.cli.test", "evaluate the test datasets of a BasicSR-style config"),
    "prepare": ("sisr.cli.prepare", "build training and benchmark datasets"),
    "lam": ("sisr.cli.lam", "local attribution maps and the diffusion index of networks (LAM)"),
    "profile": ("sisr.cli.profile", "parameters, multiply-adds, latency and memory of networks"),
    "export": ("sisr.cli.export", "export a network to ONNX, verified with ONNX Runtime"),
    "serve": ("sisr.cli.serve", "a local web page to upscale and compare images"),
}

# Commands that run networks on the CPU: they take --threads N.
THREADED = frozenset({"upscale", "train", "evaluate", "test", "lam", "profile", "export", "serve"})

_SIGINT, _SIGTERM = 2, 15  # POSIX numbers, so that reporting needs no import
_INTERRUPTED = {_SIGINT: ("interrupted", 130), _SIGTERM: ("terminated", 143)}


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that ``finally`` blocks and atomic writes clean up.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 after a user error, 2 for a usage error, 130 when interrupted,
        143 when terminated (SIGTERM).
    """
    received: list[int] = []  # the signals that arrived during this call
    try:
        restore = _catch_signals(received)
        try:
            status = run_command(sys.argv[1:] if argv is None else list(argv))
        finally:
            restore()
        if not received:
            return status
        raise KeyboardInterrupt  # a signal still waiting to be raised, or one the command swallowed
    except BaseException as e:
        if received:
            # Also when C code turned the KeyboardInterrupt into another error (numpy's import does).
            message, status = _INTERRUPTED[received[0]]
        elif isinstance(e, SystemExit):  # --help, --version or a usage error; argparse has printed it
            return e.code if isinstance(e.code, int) else 2
        elif isinstance(e, SisrError):
            message, status = str(e), 1
        elif isinstance(e, KeyboardInterrupt):
            message, status = _INTERRUPTED[_SIGINT]
        elif isinstance(e, Terminated):
            message, status = _INTERRUPTED[_SIGTERM]
        else:
            raise
        error(message)
        return status


def run_command(argv: Sequence[str]) -> int:
    """Parses ``argv`` and runs its command, letting errors propagate (:func:`main` reports them).

    Args:
        argv: Arguments without the program name, e.g. ``["train", "C.yml", "--dry-run"]``.

    Returns:
        The command's exit status.

    Raises:
        SystemExit: From argparse, for ``--help``, ``--version`` and usage errors.
        SisrError: On bad input.
    """
    import argparse
    import importlib

    from sisr.runtime import configure_threads, reuse_freed_memory

    argv = list(argv)
    if not argv or argv[0] not in COMMANDS:  # help, version or a usage error: argparse exits
        from sisr import __version__

        top = argparse.ArgumentParser(
            prog="sisr", description="Single-image super-resolution with MMA and SeemoRe."
        )
        top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        subparsers = top.add_subparsers(title="commands", metavar="COMMAND", required=True)
        for name, (_, help_line) in COMMANDS.items():
            subparsers.add_parser(name, help=help_line)
        top.parse_args(argv)
        raise SystemExit(2)  # not reached: every such argv makes argparse exit
    name, rest = argv[0], argv[1:]
    module_name, help_line = COMMANDS[name]
    configure_threads()  # before the command imports torch (OpenMP reads its wait policy on load)
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"sisr {name}", description=help_line)
    module.add_arguments(parser)
    if name in THREADED:
        from sisr.cli.argtypes import positive_int

        parser.add_argument(
            "--threads",
            type=positive_int,
            default=None,
            metavar="N",
            help="CPU threads (default: OMP_NUM_THREADS if set, else one per core); OpenMP threads wait "
            "passively (OMP_WAIT_POLICY=PASSIVE) unless OMP_WAIT_POLICY is set",
        )
    parse = getattr(module, "parse_args", None)
    args = parser.parse_args(rest) if parse is None else parse(parser, rest)
    if getattr(args, "threads", None) is not None:
        configure_threads(args.threads)
    reuse_freed_memory()  # a command runs and exits: keep freed tensors' memory for the next ones
    return module.run(args)


def error(message: str) -> None:
    """Prints ``sisr: error: <message>`` on one line of stderr, whatever the message holds."""
    # One line, so that scripts can grep the output.
    print(f"sisr: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Prints ``sisr: warning: <message>`` on one line of stderr."""
    print(f"sisr: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _catch_signals(received: list[int]) -> Callable[[], None]:
    """Makes SIGINT raise KeyboardInterrupt and SIGTERM :class:`Terminated`, each noted in `received`.

    Returns what puts the previous handlers back. Outside the main thread, where handlers cannot be
    set, nothing changes. A signal that arrives during an import is raised as soon as the import is
    over: raised inside one, it may meet C code that turns it into another error (numpy's import) or
    aborts the process (torch's C++ calls back into Python while importing). A second Ctrl-C while the
    first waits ends the process at once (nothing is being written while torch is imported). An
    interruption that Python would swallow (raised in a ``__del__`` or weakref callback) is raised again
    a moment later.
    In a forked worker (data loader, process pool) SIGTERM ends the worker quietly, as before.
    """
    import signal
    import threading
    import types

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    pid = os.getpid()
    retry = hasattr(signal, "setitimer")  # POSIX: SIGALRM raises what had to wait
    pending: list[type[BaseException]] = []

    def raise_when_safe(kind: type[BaseException], frame: types.FrameType | None) -> None:
        if retry and _importing(frame):
            pending.append(kind)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        pending.clear()
        raise kind

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        if KeyboardInterrupt in pending:  # a second Ctrl-C while waiting for an import: stop now
            error("interrupted")
            os._exit(130)
        received.append(signum)
        raise_when_safe(KeyboardInterrupt, frame)

    def terminate(signum: int, frame: types.FrameType | None) -> None:
        if os.getpid() != pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        received.append(signum)
        raise_when_safe(Terminated, frame)

    def again(signum: int, frame: types.FrameType | None) -> None:
        if pending:
            raise_when_safe(pending.pop(), frame)

    hook = sys.unraisablehook

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        # Raised inside a weakref callback or __del__, where Python prints the exception and swallows it:
        # raise it again from SIGALRM, in the code around.
        if isinstance(info.exc_value, (KeyboardInterrupt, Terminated)):
            pending.append(type(info.exc_value))
            signal.setitimer(signal.ITIMER_REAL, 0.02)
        else:
            hook(info)

    catch = [signal.SIGINT, signal.SIGTERM, *([signal.SIGALRM] if retry else [])]
    previous = {sig: signal.getsignal(sig) for sig in catch}
    if retry:
        sys.unraisablehook = unraisable
        signal.signal(signal.SIGALRM, again)
    signal.signal(signal.SIGTERM, terminate)
    if previous[signal.SIGINT] is signal.default_int_handler:  # leave a debugger's or IDE's own handler
        signal.signal(signal.SIGINT, interrupt)

    def restore() -> None:
        if retry:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.unraisablehook = hook
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python

    return restore


def _importing(frame: object) -> bool:
    """Whether `frame` (a signal handler's) runs inside an import."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):  # type: ignore[attr-defined]
            return True
        frame = frame.f_back  # type: ignore[attr-defined]
    return False
