"""Writing files so that a crash never leaves half of one behind.

Why: a training run overwrites its checkpoint every epoch, and ``export`` overwrites the
shipped weights; a process killed mid-write must leave the previous complete file, not a
truncated one that fails to load the next morning.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "check_writable_folder", "check_writable_file",
           "remove_stale_temps", "FolderLock"]


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


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` (and its parents) and prove it takes a file, or raise one sentence.

    Why up front: a training run or an export that only finds out after an hour of work that
    its output path lies under a file, or on a read-only disk, has wasted the hour.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder; pass a folder path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{what} {folder} cannot be written ({exc.strerror or exc}); pass a "
                         "folder you can write to.") from exc
    return folder


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` may be written as a file: it is not a folder and its folder takes files."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; pass a file name (e.g. {path}/"
                         f"{'report.json' if 'report' in what else 'weights.pt'}).")
    check_writable_folder(path.parent, f"the folder of {what}")
    return path


def remove_stale_temps(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete the ``.NAME.*`` temporary files a killed :func:`atomic_write` left in ``folder``.

    Only call this while holding the folder's lock (:class:`FolderLock`): a live writer's
    temporary file has the same name pattern.
    """
    stale = [p for p in Path(folder).glob(f".{name}.*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class FolderLock:
    """An exclusive claim on a folder by one process: the file ``.lock`` holding its pid.

    Why a pid and not just the file's existence: a run killed with SIGKILL never removes the
    file, and a lock that outlives its owner would block the folder forever. A lock whose
    pid no longer runs on this machine is stale and taken over.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike, what: str = "training") -> None:
        self.path = Path(folder) / self.NAME
        self.what = what
        self.held = False

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise ``ValueError`` naming the process that holds it.

        The pid is written to a temporary file first and hard-linked to ``.lock``: the link
        fails if ``.lock`` exists, so no process ever sees a lock without its pid.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".lock-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            for _ in range(2):  # a second try after removing a stale lock
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    self._refuse_or_clear()
                    continue
                self.held = True
                return self
        finally:
            os.unlink(tmp)
        raise ValueError(f"Could not take the lock {self.path}; delete it and try again.")

    def _refuse_or_clear(self) -> None:
        owner = _lock_owner(self.path)
        if owner is not None:
            raise ValueError(
                f"Another {self.what} ({owner}) is writing to {self.path.parent}; wait for it "
                f"to finish or use another folder (delete {self.path} if you are sure no such "
                "process runs).")
        self.path.unlink(missing_ok=True)  # stale: its process is gone

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_owner(path: Path) -> str | None:
    """'pid N on HOST' when the lock's process may still run; None when it is stale."""
    try:
        pid_text, _, host = path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None  # garbled: not a lock this class wrote
    if host and host != socket.gethostname():
        return f"pid {pid} on {host}"  # cannot check another machine's processes
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, under another user
    return f"pid {pid}"
