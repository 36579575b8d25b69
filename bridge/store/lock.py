"""One daemon per database: an exclusive lock on a file beside it, held for the process's life.

Two bridges on one database would both claim the same deliveries and fight over one MQTT client
id. The lock is an flock(2) on `<database>.lock`, so it is gone the moment its holder dies (no
stale lock after a crash or a power cut); the file holds the holder's PID for the message the
second one prints. Operator commands do not take it: they work beside the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bridge.store.records import StoreError


class StoreInUseError(StoreError):
    """Another process holds the database's daemon lock."""


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextlib.contextmanager
def daemon_lock(database: Path) -> Iterator[None]:
    """Hold the daemon lock of `database` for the context; StoreInUseError naming the holder's PID
    when another process has it."""
    path = lock_path(database)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUseError(_in_use(database, _read_pid(fd))) from None
        held = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    except BaseException:
        # A start that failed (a damaged database, left untouched) leaves nothing of ours.
        if held and created:
            path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def holder(database: Path) -> int | None:
    """The PID of the process holding the daemon lock, or None when it is free (a check only:
    it takes the lock for a moment if free, and never creates the file)."""
    path = lock_path(database)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # none yet, or no folder to hold one (the state folder check says why)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        return None
    finally:
        os.close(fd)


def check_free(database: Path) -> None:
    """StoreInUseError when another process holds the daemon lock of `database`."""
    pid = holder(database)
    if pid is not None:
        raise StoreInUseError(_in_use(database, pid))


def _in_use(database: Path, pid: int | None) -> str:
    who = f"PID {pid}" if pid and pid > 0 else "another process"
    return (
        f"{database} is in use by another bridge ({who}); one bridge per database"
        " (operator commands work beside it)"
    )


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
