"""A database file that fails SQLite's integrity check at start: the bridge refuses to start
with a clear message, and never overwrites or deletes the file."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.harness import write_config


def _damaged_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, text TEXT)")
        db.execute("CREATE INDEX filler_text ON filler(text)")
        db.executemany(
            "INSERT INTO filler (text) VALUES (?)", [(f"row {n:06d}" * 8,) for n in range(5000)]
        )
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(page * 3, len(data) - page, page * 7):  # scribble over some pages
        data[offset + 100 : offset + 400] = b"\xa5" * 300
    path.write_bytes(bytes(data))


def test_a_damaged_database_stops_the_start_and_is_left_alone(tmp_path: Path):
    db = tmp_path / "bridge.db"
    _damaged_database(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    config = write_config(tmp_path, broker_port=1, go2clock_url="http://127.0.0.1:1")
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("clockin-bridge: database error:")
    assert str(db) in message
    assert "left untouched" in message
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("bridge.db")) == [
        "bridge.db"
    ]
