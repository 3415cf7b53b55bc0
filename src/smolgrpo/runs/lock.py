"""One process per run folder: an exclusive `flock` on `RUN_FOLDER/.smolgrpo-lock`.

`smolgrpo train` and `smolgrpo sft` (new, --resume or --overwrite) take it before they read or
change anything in the folder and hold it for the whole run, so a second process on the same
folder stops at once with one line naming the holder (its pid and host, which the holder writes
into the file) instead of interleaving `metrics.jsonl` rows, sharing a checkpoint's staging
folder or pruning the other's checkpoints.

The lock is the kernel's, not the file: a holder that dies in any way (SIGKILL, a crash, a lost
node) releases it with its file descriptors, so there is never a stale lock to clear by hand. The
file itself may stay behind after a kill; the next process simply locks it again. A holder that
ends normally removes the file (while still holding the lock; a process that opened the file
just before checks, once it holds the lock, that the path still names the file it locked).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from smolgrpo.errors import SmolGRPOError, warn

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

LOCK_FILE = ".smolgrpo-lock"


class RunLock:
    """The held lock on one run folder; `release()` (idempotent) gives it back."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    @classmethod
    def acquire(cls, folder: Path) -> RunLock:
        """Lock `folder` (which must exist) or raise a SmolGRPOError naming the holder. Where the
        file system has no locks, one warning and an unheld RunLock."""
        folder = Path(folder)
        path = folder / LOCK_FILE
        if fcntl is None:
            warn(f"{folder}: no file locks on this platform; nothing stops a second process")
            return cls(folder, None)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe_holder(fd)
                os.close(fd)
                raise SmolGRPOError(
                    f"{folder}: in use by another smolgrpo process ({holder}); wait for it to "
                    "end or stop it, or choose another output folder"
                ) from None
            except OSError as error:  # e.g. a file system without flock support
                os.close(fd)
                warn(
                    f"{folder}: cannot lock {LOCK_FILE} ({error.strerror or error}); nothing "
                    "stops a second process from writing this run"
                )
                return cls(folder, None)
            if _same_file(path, fd):
                break
            os.close(fd)  # its holder removed the file between our open and our lock: again
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname()}
        os.write(fd, (json.dumps(record) + "\n").encode())
        return cls(folder, fd)

    def release(self) -> None:
        """Remove the lock file and unlock (closing the descriptor unlocks)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(self.path, fd):
                self.path.unlink()
        except OSError:
            pass  # the folder went away or is read-only: the lock goes with the descriptor
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_) -> None:
        self.release()


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _describe_holder(fd: int) -> str:
    """'pid 123 on host name' from the holder's record, or a plain phrase if unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096).decode())
        return f"pid {int(record['pid'])} on host {record['host']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is still writing it
        return "pid and host not yet recorded"
