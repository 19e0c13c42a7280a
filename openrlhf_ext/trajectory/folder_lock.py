"""One writer per run folder: an exclusive lock that the saver (and ``convert``) holds while it
writes.

Two savers on one folder lose manifest lines (each rewrites the manifest from what it read) and
leave thresholds that disagree with their files. The lock is ``fcntl.flock`` on ``.writer.lock``
in the folder, which also holds who took it (pid, host, start time, what), so that a second
writer fails at once with a message naming the first. The kernel drops the lock when the holder
exits, however it ends, so a crash never leaves a folder locked (only the file, which the next
writer takes over); a writer that finishes removes the file.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with FolderLock(folder, "a saver"):
    ...     try:
    ...         FolderLock(folder, "another saver").acquire()
    ...     except FolderInUse as error:
    ...         print("in use by", error.holder["what"])
    in use by a saver
"""
from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".writer.lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per folder is then the user's to keep
    fcntl = None


class FolderInUse(RuntimeError):
    """Another writer holds the folder's lock; ``holder`` is what it wrote there (pid, host, ...).
    A configuration error: it is raised whatever ``--trajectory_strict`` says."""

    def __init__(self, folder: Path, holder: dict):
        self.folder, self.holder = folder, holder
        who = ", ".join(f"{k} {holder[k]}" for k in ("what", "pid", "host", "started_at") if k in holder) or "unknown"
        super().__init__(
            f"{folder} is being written by another process ({who}; lock file {folder / LOCK_FILE}). Two writers "
            "on one folder lose each other's manifest lines: give this run its own --trajectory_dir (or -o), "
            "or wait for the other to finish")


class FolderLock:
    """An exclusive lock on ``folder`` (created if missing), held from ``acquire()`` until
    ``release()`` (or the end of a ``with`` block, or the process)."""

    def __init__(self, folder, what: str):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock; FolderInUse when another writer holds it, OSError when the folder
        cannot be written."""
        if self._fd is not None or fcntl is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderInUse(self.folder, holder) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(path, fd):
                break
            os.close(fd)  # the holder removed the file between our open and flock: take the new one
        else:
            raise OSError(f"{path}: the lock file keeps being replaced")
        holder = {"what": self.what, "pid": os.getpid(), "host": socket.gethostname(),
                  "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv[:8]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            path = self.folder / LOCK_FILE
            if _same_file(path, self._fd):
                try:
                    path.unlink()  # while still locked: a writer that opened it sees it is gone and retries
                except OSError:
                    pass
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
