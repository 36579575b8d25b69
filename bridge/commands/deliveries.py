"""Delivery rows as the operator commands show them (dead and held share this)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from bridge.commands.common import local_from_unix, local_text

HEADERS = ("id", "sink", "event", "person", "action", "time", "attempts", "last_error")


def as_json(row: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    data = dict(row)
    data["action_inferred"] = bool(row.get("action_inferred"))  # no direction from the terminal
    data["time"] = local_text(row["event_time"], tz)
    for key in ("received_at", "device_time"):  # device_time: replaced by the received time
        if key in row:
            data[key] = local_text(row[key], tz)
    for key in ("next_attempt_at", "created_at", "settled_at"):
        data[key] = local_from_unix(row[key], tz)
    return data


def as_row(row: dict[str, Any], tz: ZoneInfo, *, error_width: int = 60) -> list[object]:
    error = row["last_error"] or None
    if error is not None and len(error) > error_width:
        error = error[: error_width - 3] + "..."
    return [
        row["id"],
        row["sink"],
        row["event_key"],
        row["person"],
        f"{row['action']} (inferred)" if row.get("action_inferred") else row["action"],
        local_text(row["event_time"], tz),
        row["attempts"],
        error,
    ]


def detail_lines(row: dict[str, Any], tz: ZoneInfo) -> list[str]:
    """Every field of one delivery, one per line (`show ID`)."""
    data = as_json(row, tz)
    width = max(len(key) for key in data)
    return [f"{key.ljust(width)}  {'-' if value is None else value}" for key, value in data.items()]
