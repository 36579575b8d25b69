"""The daemon's heartbeat: how `clockin-bridge status`, a separate process, knows whether the
daemon runs and how it is doing.

Every HEARTBEAT_SECONDS the daemon replaces `<database>.heartbeat` (a small JSON file, written
to a temporary name and renamed, so a reader never sees half of it) with the time, its PID, the
broker connection and each sink's state. `status` reads it beside the daemon lock: no lock
holder means not running; a heartbeat older than STALE_AFTER_SECONDS means the daemon is wedged.
The file goes when the daemon stops cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TypedDict

from bridge.dispatch.health import SinkState

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS


class MqttState(TypedDict):
    connected: bool
    since: float | None  # connected or disconnected since (epoch seconds)
    last_error: str | None


class Heartbeat(TypedDict):
    pid: int
    version: str
    started_at: float
    written_at: float
    mqtt: MqttState
    sinks: dict[str, SinkState]


class DaemonState(TypedDict):
    state: str  # running | not responding | not running
    detail: str
    heartbeat: Heartbeat | None


def heartbeat_path(database: Path) -> Path:
    return database.with_name(database.name + ".heartbeat")


def write(path: Path, beat: Heartbeat) -> None:
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(beat, out)
    partial.replace(path)  # no fsync: a heartbeat lost in a power cut says nothing wrong


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def read(path: Path) -> Heartbeat | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("written_at"), int | float):
            return data  # type: ignore[return-value]
    return None


def daemon_state(beat: Heartbeat | None, *, holder: int | None, now: float) -> DaemonState:
    """Running, not responding or not running, from the daemon lock's holder and the beat."""
    if holder is None:
        return {"state": "not running", "detail": "no bridge holds the database", "heartbeat": None}
    if beat is None or beat["pid"] != holder:
        detail = f"PID {holder} holds the database but has not written a heartbeat yet"
        return {"state": "not responding", "detail": detail, "heartbeat": None}
    age = now - beat["written_at"]
    if age > STALE_AFTER_SECONDS:
        detail = f"PID {holder}: last heartbeat {age:.0f} s ago (every {HEARTBEAT_SECONDS:.0f} s)"
        return {"state": "not responding", "detail": detail, "heartbeat": beat}
    detail = f"PID {holder}, up {_duration(now - beat['started_at'])}, version {beat['version']}"
    return {"state": "running", "detail": detail, "heartbeat": beat}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
