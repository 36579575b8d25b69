"""A simulated power cut for a bridge subprocess (tests/faults/powercut.c, LD_PRELOADed): the
shim keeps a copy of the database's files as of their last flush; `cut` kills the bridge and
puts those copies in place, which is what the disk could hold at worst after the power went."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("powercut.c")


def build_shim(directory: Path) -> Path:
    """Compile the shim (skips the test when this machine has no C compiler)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("the power-cut shim needs a C compiler (apt-get install gcc)")
    shim = directory / "powercut.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(SOURCE), "-ldl"], check=True
    )
    return shim


def shim_env(shim: Path, database: Path, flush_log: Path) -> dict[str, str]:
    return {
        "LD_PRELOAD": str(shim),
        "POWERCUT_SUFFIX": database.name,
        "POWERCUT_LOG": str(flush_log),
    }


def flushes(flush_log: Path) -> int:
    """Flushes of the database's files so far."""
    return len(flush_log.read_text().splitlines()) if flush_log.exists() else 0


def lose_unflushed_writes(database: Path) -> None:
    """After the bridge was killed: each database file as it was at its last flush."""
    wal = database.with_name(database.name + "-wal")
    for path in (database, wal):
        synced = path.with_name(path.name + ".synced")
        if synced.exists():
            shutil.copyfile(synced, path)
        elif path == wal:  # never flushed: nothing in it survives
            wal.unlink(missing_ok=True)
        else:
            msg = f"{path} was never flushed"
            raise AssertionError(msg)
    database.with_name(database.name + "-shm").unlink(missing_ok=True)  # shared memory
