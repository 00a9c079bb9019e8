"""Writing files so that a crash never leaves half of one behind.

Why: a training run overwrites its checkpoint every epoch, and ``export`` overwrites the
shipped weights; a process killed mid-write must leave the previous complete file, not a
truncated one that fails to load the next morning.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file in ``path``'s folder, then rename it over ``path``.

    The rename is atomic on POSIX and Windows: readers see the old file or the new one. The
    new file gets the permissions an ordinary ``open(path, "w")`` would give it (those of the
    file it replaces, else 0666 less the umask), not ``mkstemp``'s private 0600, so a
    checkpoint or weights file stays readable by whoever could read it before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _mode_for(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the old file's, or 0666 & ~umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask
