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
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from sisr import __version__
from sisr.errors import SisrError
from sisr.runtime import reuse_freed_memory

__all__ = ["COMMANDS", "main", "run_command"]

# Command name -> (module, one-line help). Nothing else is imported until a command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "upscale": ("sisr.cli.upscale", "super-resolve images"),
    "models": ("sisr.cli.models", "list the shipped models"),
    "train": ("sisr.cli.train", "train a network from a BasicSR-style option file"),
    "evaluate": ("sisr.cli.evaluate", "score a model on benchmark sets (PSNR/SSIM as the papers)"),
    "test": ("sisr.cli.test", "evaluate the test datasets of a BasicSR-style config"),
    "prepare": ("sisr.cli.prepare", "build training and benchmark datasets"),
}


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
    previous = _catch_sigterm()
    try:
        try:
            return run_command(sys.argv[1:] if argv is None else list(argv))
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    except SystemExit as e:  # --help, --version or a usage error; argparse has printed the message
        return e.code if isinstance(e.code, int) else 2
    except SisrError as e:
        error(str(e))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Terminated:
        error("terminated")
        return 143


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
    argv = list(argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv)  # help, version or a usage error: exits
        raise SystemExit(2)  # not reached: every such argv makes argparse exit
    name, rest = argv[0], argv[1:]
    module_name, help_line = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"sisr {name}", description=help_line)
    module.add_arguments(parser)
    parse = getattr(module, "parse_args", None)
    args = parser.parse_args(rest) if parse is None else parse(parser, rest)
    reuse_freed_memory()  # a command runs and exits: keep freed tensors' memory for the next ones
    return module.run(args)


def error(message: str) -> None:
    """Prints ``sisr: error: <message>`` on one line of stderr, whatever the message holds."""
    # One line, so that scripts can grep the output.
    print(f"sisr: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Prints ``sisr: warning: <message>`` on one line of stderr."""
    print(f"sisr: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sisr", description="Single-image super-resolution with MMA and SeemoRe."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, (_, help_line) in COMMANDS.items():
        subparsers.add_parser(name, help=help_line)
    return parser


def _catch_sigterm() -> Any:
    """Makes SIGTERM raise :class:`Terminated` in the main thread; returns the handler it replaced.

    None (nothing to restore) outside the main thread, where handlers cannot be set.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    return signal.SIG_DFL if previous is None else previous  # None: set outside Python
