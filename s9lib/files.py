"""Every file s9lib writes goes through :func:`atomic_write`: complete, owned, or refused.

Why: a training run overwrites its checkpoint every epoch, ``export`` overwrites the shipped
weights, ``gradcam`` writes figures into a folder the user names. A process killed (or a disk
filled) mid-write must leave the previous complete file, never a truncated one; two commands
writing the same name must leave one whole file, never a mixture; and no command may replace
a file it did not make (a user's notes, or a checkpoint under a report's name).

How, in one place:

* **Atomic.** The bytes go to a temporary file ``.s9tmp-HOST-PID-*`` in the destination's
  folder, are ``fsync``-ed, and the file is then linked to a new name (which fails rather
  than replace a file that appeared meanwhile) or renamed over an existing one.
* **Leftovers.** The temporary file of a writer that was killed is deleted by the next
  write into that folder: its name carries the writer's host and pid, and a pid that no
  longer runs on this host marks it as dead.
* **Ownership.** Each kind of file (:class:`FileKind`) says how s9lib recognises one it
  wrote. An existing destination is replaced only when it is of the same kind:
  figures (PNG) carry a text chunk ``s9lib`` (:data:`FIGURE`), JSON files a top-level key
  ``"s9lib"`` naming their kind (:func:`json_kind`), checkpoints and weights files are
  recognised by their contents (``s9lib.checkpoints``).
* **Errors.** A full disk, a read-only file system or a missing permission becomes one
  sentence naming the path and what to do (:class:`WriteFailed`, an ``OSError``), also
  when torch reports it as a ``RuntimeError`` about a failed write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["MARK", "FileKind", "FIGURE", "json_kind", "read_small_json", "atomic_write",
           "write_json", "save_figure", "check_destination", "WriteFailed", "write_failed",
           "check_writable_folder", "check_writable_file", "remove_stale_temps", "FolderLock"]

#: The text chunk (PNG) and the key (JSON) that mark a file as written by s9lib.
MARK = "s9lib"
_TEMP = ".s9tmp-"


@dataclass(frozen=True)
class FileKind:
    """A kind of file s9lib writes: ``name`` for messages ("a GradCAM figure"), and
    ``recognise(path)``, true for an existing file of this kind that s9lib wrote."""

    name: str
    recognise: Callable[[Path], bool]


def _png_is_marked(path: Path) -> bool:
    """A PNG whose chunks before the image data include the text chunk ``s9lib``."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        for _ in range(256):  # header chunks only; a PNG has a handful
            head = f.read(8)
            if len(head) < 8:
                return False
            size, ctype = struct.unpack(">I4s", head)
            if ctype in (b"IDAT", b"IEND"):
                return False
            if ctype == b"tEXt" and size < 1 << 16:
                if f.read(size).partition(b"\0")[0] == MARK.encode():
                    return True
                size = 0
            f.seek(size + 4, os.SEEK_CUR)  # the data (unless read) and the CRC
    return False


#: Figures (PNG): matplotlib writes the text chunk ``s9lib`` (see :func:`save_figure`).
FIGURE = FileKind("an s9lib figure (PNG)", _png_is_marked)


def read_small_json(path: Path, limit: int = 64 << 20):
    """The JSON value in ``path``, or None when it is larger than ``limit`` or not JSON."""
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def json_kind(tag: str, name: str | None = None) -> FileKind:
    """JSON files s9lib writes with :func:`write_json`: an object whose key ``"s9lib"``
    is ``tag`` (e.g. ``"faithfulness report"``)."""
    def recognise(path: Path) -> bool:
        value = read_small_json(path)
        return isinstance(value, dict) and value.get(MARK) == tag
    return FileKind(name or f"an s9lib {tag} (JSON)", recognise)


class WriteFailed(OSError):
    """A file could not be written; ``str()`` is one sentence naming the path and what to do.
    ``errno`` is the operating system's (``ENOSPC``, ``EROFS``, ``EACCES``, ...)."""

    def __init__(self, code: int | None, sentence: str) -> None:
        super().__init__(code, sentence)
        self.sentence = sentence

    def __str__(self) -> str:
        return self.sentence


_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or pass a path on another disk",
    errno.EDQUOT: "the disk quota is used up; free some space or pass a path on another disk",
    errno.EROFS: "the file system is read-only; pass a path on a writable disk",
    errno.EACCES: "permission denied; pass a path you may write to, or fix its permissions",
    errno.EPERM: "the operation is not permitted there; pass a path you may write to",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f); raise the "
                 "limit or pass a path on another disk",
    errno.ENAMETOOLONG: "the name is too long for the file system; pass a shorter one",
}


def write_failed(exc: OSError, path: str | os.PathLike, existed: bool | None = None) -> WriteFailed:
    """``exc`` (raised while writing ``path``) as a :class:`WriteFailed` sentence."""
    if isinstance(exc, WriteFailed):
        return exc
    advice = _ADVICE.get(exc.errno) or f"{exc.strerror or exc}; check the path and try again"
    kept = ("" if existed is None else " The file that was there is unchanged." if existed
            else " Nothing was written there.")
    return WriteFailed(exc.errno, f"Could not write {path}: {advice}.{kept}")


class _Recorder:
    """A file object that remembers the ``OSError`` its ``write`` raised: torch reports a
    full disk as ``RuntimeError: ... file write failed``, and this recovers the cause."""

    def __init__(self, f: BinaryIO) -> None:
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def check_destination(path: str | os.PathLike, kind: FileKind) -> Path:
    """Refuse a destination s9lib must not replace: a folder, or an existing file that is
    not of ``kind`` (not made by s9lib, or another kind, e.g. a checkpoint under a report's
    name). Returns ``path`` as a ``Path``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass a file name for {kind.name}.")
    if os.path.lexists(path) and not (path.is_file() and kind.recognise(path)):
        raise ValueError(f"{path} exists and is not {kind.name}; s9lib never replaces a "
                         "file it did not make (nor one of another kind). Pass another path, "
                         "or move the file away first.")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *,
                 kind: FileKind) -> Path:
    """Write ``path`` by calling ``write(f)`` on a binary file: the whole file or none of it.

    ``kind`` says what is written and how s9lib recognises such a file: an existing ``path``
    that is not of this kind is refused before anything is written (:func:`check_destination`).
    The bytes go to a temporary file beside ``path``, are fsync-ed and then linked or renamed
    into place (readers see the old file or the new one, never a part). The new file gets the
    permissions an ordinary ``open(path, "w")`` would give it (those of the file it replaces,
    else 0666 less the umask), not ``mkstemp``'s private 0600. A failure of the disk is a
    :class:`WriteFailed` naming the path; the old file, if any, is unchanged.
    """
    path = check_destination(path, kind)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix())
    except OSError as exc:
        raise write_failed(exc, path, existed) from exc
    try:
        _fill(fd, write)
        os.chmod(tmp, _mode_for(path))
        _publish(Path(tmp), path, kind)
    except OSError as exc:
        raise write_failed(exc, path, existed) from exc
    finally:
        Path(tmp).unlink(missing_ok=True)  # still there after a link or a failure
    return path


def _fill(fd: int, write: Callable[[BinaryIO], object]) -> None:
    """Run ``write`` on the open temporary file, flush and fsync it; a write error the
    writer wrapped in another exception (torch: ``RuntimeError``) is raised as itself."""
    with os.fdopen(fd, "wb") as f:
        recorder = _Recorder(f)
        try:
            write(recorder)
            f.flush()
        except Exception as exc:
            if recorder.error is not None and exc is not recorder.error:
                raise recorder.error from exc
            raise
        os.fsync(f.fileno())


def _publish(tmp: Path, path: Path, kind: FileKind) -> None:
    """Give the finished ``tmp`` the name ``path``: a hard link when the name is new (it fails
    instead of replacing a file created in the meantime), else a rename over a file that
    is still of ``kind``."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        check_destination(path, kind)
        os.replace(tmp, path)
    except OSError as exc:  # a file system without hard links
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                             errno.ENOSYS):
            raise
        check_destination(path, kind)
        os.replace(tmp, path)
    try:  # make the new name itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass  # not every platform can fsync a folder


def write_json(path: str | os.PathLike, value: dict, kind: FileKind, tag: str) -> Path:
    """Write ``value`` as JSON marked ``{"s9lib": tag, ...}`` (``kind``: :func:`json_kind`
    of ``tag``). A non-finite number (NaN, inf) is refused: JSON has none, and a file with
    ``NaN`` in it is not JSON."""
    try:
        text = json.dumps({MARK: tag, **value}, indent=1, allow_nan=False) + "\n"
    except ValueError as exc:
        raise ValueError(f"{path} was not written: it would hold a non-finite number (NaN or "
                         "inf), which JSON cannot represent.") from exc
    return atomic_write(path, lambda f: f.write(text.encode()), kind=kind)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, **savefig) -> Path:
    """Save the matplotlib figure ``fig`` as a PNG marked as s9lib's (:data:`FIGURE`)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi,
                                                    metadata={MARK: "figure"}, **savefig),
                        kind=FIGURE)


def _mode_for(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the old file's, or 0666 & ~umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _temp_prefix() -> str:
    return f"{_TEMP}{_host_tag()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it runs, under another user
    return True


def _writer_died(name: str) -> bool:
    """A temporary file ``.s9tmp-HOST-PID-*`` whose writer no longer runs on this host."""
    host, _, rest = name[len(_TEMP):].partition("-")
    pid = rest.partition("-")[0]
    return host == _host_tag() and pid.isdigit() and not _pid_alive(int(pid))


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
        fd, probe = tempfile.mkstemp(dir=folder, prefix=_temp_prefix())
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{what} {folder} cannot be written ({exc.strerror or exc}); pass a "
                         "folder you can write to.") from exc
    return folder


def check_writable_file(path: str | os.PathLike, what: str,
                        kind: FileKind | None = None) -> Path:
    """``path`` may be written as a file: it is not a folder, its folder takes files and,
    with ``kind``, an existing file there is one of that kind s9lib wrote."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; pass a file name (e.g. {path}/"
                         f"{'report.json' if 'report' in what else 'weights.pt'}).")
    check_writable_folder(path.parent, f"the folder of {what}")
    return check_destination(path, kind) if kind is not None else path


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files of writers that died in ``folder``; returns them.

    Always safe: a ``.s9tmp-HOST-PID-*`` file is removed only when its pid no longer runs on
    this host. With ``name``, also the ``.NAME.*`` files of older s9lib versions, whose names
    carry no pid: only call it so while holding the folder's lock (:class:`FolderLock`).
    """
    folder = Path(folder)
    stale = [p for p in folder.glob(f"{_TEMP}*") if _writer_died(p.name)]
    if name is not None:
        stale += [p for p in folder.glob(f".{name}.*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class FolderLock:
    """An exclusive claim on a folder by one process: the file ``.lock`` holding its pid.

    Why a pid and not just the file's existence: a run killed with SIGKILL never removes the
    file, and a lock that outlives its owner would block the folder forever. A lock whose
    pid no longer runs on this machine is stale and taken over. A process that holds the
    lock may take it again (``train`` claims the folder, then ``fit`` inside it); the file
    goes when the outermost holder releases it.
    """

    NAME = ".lock"
    _depth: dict[str, int] = {}  # resolved lock path -> how often this process holds it

    def __init__(self, folder: str | os.PathLike, what: str = "training") -> None:
        self.path = Path(folder) / self.NAME
        self.what = what
        self.held = False

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise ``ValueError`` naming the process that holds it.

        The pid is written to a temporary file first and hard-linked to ``.lock``: the link
        fails if ``.lock`` exists, so no process ever sees a lock without its pid.
        """
        key = str(self.path.resolve())
        if key not in self._depth:
            try:
                self._take()
            except OSError as exc:
                raise write_failed(exc, self.path) from exc
        self._depth[key] = self._depth.get(key, 0) + 1
        self.held = True
        return self

    def _take(self) -> None:
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
                return
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
            key = str(self.path.resolve())
            self._depth[key] -= 1
            if not self._depth[key]:
                del self._depth[key]
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
    return f"pid {pid}" if _pid_alive(pid) else None
