"""Writing a file so that it either appears whole or not at all."""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ["TEMPORARY_PATTERN", "atomic_write", "new_temporary", "remove_stale_temporaries"]

# ``.{name}.sisr-{host}-{pid}-{random}.tmp``: hidden, and it names the process that writes it, so a later
# write into the same folder can tell an abandoned file (its writer was killed with SIGKILL) from a live
# one. The host keeps a machine from judging the process ids of another that shares the folder (NFS).
TEMPORARY_PATTERN = re.compile(r"^\..*\.sisr-([A-Za-z0-9]*)-(\d+)-[^.]*\.tmp$", re.DOTALL)
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]


def new_temporary(path: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None) -> str:
    """Creates an empty file named ``.{name}.sisr-{host}-{pid}-{random}.tmp`` and returns its path.

    Args:
        path: The final file the temporary one stands in for; only its name is used.
        folder: Where to create it (default: the folder of `path`).

    Raises:
        OSError: The file cannot be created.
    """
    tmp = _temporary_name(path, folder=folder)
    _create(tmp)
    return tmp


def _temporary_name(path: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None) -> str:
    """A new temporary name for `path` (no file is made): this process's id and a random token, so no
    other writer uses it."""
    path = Path(path)
    name = f".{path.name}.sisr-{_HOST}-{os.getpid()}-{secrets.token_hex(6)}.tmp"
    return str((path.parent if folder is None else Path(folder)) / name)


def _create(tmp: str) -> None:
    """Creates the empty file `tmp`, readable and writable by its owner only (as mkstemp does)."""
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


# Folders this process has cleaned already.
_SWEPT: set[str] = set()


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Calls ``write(tmp_path)``, then renames the finished file to ``path``.

    The temporary file sits beside ``path`` (same file system, so the rename is atomic) under the hidden
    name ``.{name}.sisr-{host}-{pid}-{random}.tmp``; it is flushed to disk before the rename, gets the usual
    permissions (it is created 0600), and is removed on any failure or interruption (a SIGTERM that
    the caller turns into an exception included), so no partial file ever appears. A process killed
    outright (SIGKILL, power loss) cannot remove its file: the first call of a process that writes into
    the folder removes every such file whose process is gone (:func:`remove_stale_temporaries`; once per
    folder, so that writing the 30,000 files of a dataset does not list the folder 30,000 times; a
    stale file is always an earlier process's). The folder must
    exist. Errors propagate unchanged; callers turn them into their own messages.

    Args:
        path: Final location.
        write: Writes the whole file to the path it is given.
    """
    path = Path(path)
    folder = os.path.realpath(path.parent)
    if folder not in _SWEPT:
        remove_stale_temporaries(folder)
        _SWEPT.add(folder)
    # The name first, the file inside the try: an exception raised by a signal at any moment after the
    # file exists (even before new_temporary would have returned its name) still removes it.
    tmp = _temporary_name(path)
    try:
        _create(tmp)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Removes the temporary files of :func:`atomic_write` in `folder` whose writing process is gone.

    Only files written on this host are judged; another machine's are left to it.

    Any final name counts, not only the one being written: a training run killed while saving
    ``net_g_1000.pth`` next writes ``net_g_2000.pth``. A process id that has since been reused by a live
    process keeps its file until that process ends too. Files that cannot be listed or removed are left
    alone; this never fails.

    Args:
        folder: The folder to clean.

    Returns:
        The files removed.
    """
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = TEMPORARY_PATTERN.match(entry)
        if match is None or match.group(1) != _HOST or _alive(int(match.group(2))):
            continue
        candidate = Path(folder, entry)
        try:
            if candidate.is_file() and not candidate.is_symlink():
                candidate.unlink()
                removed.append(candidate)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # our own (another thread's) file in progress
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's live process
        return True
    except (OSError, OverflowError):  # no such process, or a number no process can have
        return False
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
