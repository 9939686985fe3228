"""Writing a file so that it either appears whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Calls ``write(tmp_path)``, then renames the finished file to ``path``.

    The temporary file sits beside ``path`` (same file system, so the rename is atomic) under a hidden,
    unique name; it is flushed to disk before the rename, gets the usual permissions (mkstemp makes it
    0600), and is removed on any failure or interruption, so no partial file ever appears. The folder
    must exist. Errors propagate unchanged; callers turn them into their own messages.

    Args:
        path: Final location.
        write: Writes the whole file to the path it is given.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
