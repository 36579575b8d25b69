"""A consistent copy of the live database, made beside a running daemon.

Copying the file itself is not a backup: with WAL most recent commits live in
`<database>-wal`, and a copy of the main file alone can even lack every table. SQLite's online
backup copies the database as one read transaction sees it, WAL included, while the daemon goes
on writing; the copy is then checked with `PRAGMA integrity_check` and only then put in place.
That check reads every page, which the daemon's start no longer does (bridge.store.integrity):
a backup is also the operator's whole-file check, and a damaged database is named as such.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bridge.store.connection import give_sidecars_to_owner
from bridge.store.integrity import is_damage
from bridge.store.records import StoreError


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    bytes: int
    events: int
    deliveries: int


def backup(database: Path, target: Path) -> BackupReport:
    """Copy `database` to `target` (replaced only once the copy has passed its integrity
    check; created 0600). StoreError when the database cannot be read or the copy is bad."""
    if not database.exists():
        msg = f"no database at {database} (has the bridge run yet?)"
        raise StoreError(msg)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        source = sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        with contextlib.closing(source), contextlib.closing(_private_db(partial)) as copy:
            source.execute("PRAGMA busy_timeout = 30000")
            source.backup(copy)  # all pages in one step: one consistent snapshot
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            verdict = _integrity_verdict(copy)
            if verdict != ["ok"]:
                msg = (
                    f"{database} is damaged: its copy fails the integrity check"
                    f" ({'; '.join(verdict[:3])}); no backup was written and the database was"
                    " left untouched"
                )
                raise StoreError(msg)
            [[events]] = copy.execute("SELECT COUNT(*) FROM events")
            [[deliveries]] = copy.execute("SELECT COUNT(*) FROM deliveries")
        partial.replace(target)
    except sqlite3.Error as err:
        msg = f"backup of {database} failed: {err}"
        raise StoreError(msg) from None
    finally:
        partial.unlink(missing_ok=True)
        give_sidecars_to_owner(database)  # the read left -wal and -shm behind
    return BackupReport(target, target.stat().st_size, events, deliveries)


def _integrity_verdict(copy: sqlite3.Connection) -> list[str]:
    """integrity_check's rows, one line each; a page too damaged to read is one more."""
    try:
        return [" ".join(str(row[0]).split()) for row in copy.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as err:
        if not is_damage(err):
            raise
        return [str(err)]


def _private_db(path: Path) -> sqlite3.Connection:
    """A new database file only its owner can read: it holds names, badges and hours."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return sqlite3.connect(path)
