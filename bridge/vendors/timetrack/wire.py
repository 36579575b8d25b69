"""TimeTrack's wire format, pure: timestamps, the attendance body, answers, list matching.

Timestamps are `YYYY-MM-DDTHH:MM:SS.000Z`: UTC by default; with `timestamps: local` the site's
wall time, still with the `.000Z` suffix, because the vendor's timer docs say to send local time
"in the same timezone like you are currently" in this very format (whether their `Z` means UTC
is unknown). Around the autumn clock change such a local time is ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bridge.config import TimeTrackFields
from bridge.vendors.timetrack.api import parse_json

TimestampMode = Literal["utc", "local"]
# The docs: "YYYY-MM-DDTHH:MM:SS.fffZ". Punches are whole seconds, so milliseconds are 000.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"
# An `out` with no open shift is a resent/double `out` when TimeTrack already holds an
# attendance of that person ending at most this long before it.
REPEAT_OUT_WINDOW = timedelta(minutes=5)
NOTES_SEPARATOR = "; "

_VENDOR_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?"
)
_LIST_KEYS = ("data", "items", "results", "attendances", "entries", "content")


def aware_utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None:
        # astimezone() would silently take a naive time as the host's local time
        msg = f"{what} is a naive datetime"
        raise ValueError(msg)
    return moment.astimezone(UTC)


def show_time(moment: datetime) -> str:
    """A UTC instant as details show it: 2024-07-01T06:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def vendor_wall_time(moment: datetime, *, mode: TimestampMode, site_tz: ZoneInfo) -> datetime:
    """The naive wall time TimeTrack sees for an instant: UTC, or the site's local time."""
    zone = UTC if mode == "utc" else site_tz
    return aware_utc(moment, "timestamp").astimezone(zone).replace(tzinfo=None, microsecond=0)


def format_timestamp(moment: datetime, *, mode: TimestampMode, site_tz: ZoneInfo) -> str:
    """`YYYY-MM-DDTHH:MM:SS.000Z`: UTC, or (mode "local") the site's wall time with the same
    `.000Z` suffix, because the vendor's timer docs say to send local time in this format."""
    return vendor_wall_time(moment, mode=mode, site_tz=site_tz).strftime(TIMESTAMP_FORMAT)


def parse_vendor_time(value: object, *, mode: TimestampMode, site_tz: ZoneInfo) -> datetime | None:
    """A timestamp from a TimeTrack answer as a naive wall time comparable with what we send.

    `Z` (or no suffix) is taken as "the same clock we send"; an explicit offset is converted.
    """
    if not isinstance(value, str) or not (match := _VENDOR_TIME.fullmatch(value.strip())):
        return None
    try:
        naive = datetime.fromisoformat(f"{match[1]}T{match[2]}")
    except ValueError:
        return None
    suffix = match[3]
    if suffix is None or suffix == "Z":
        return naive
    offset = suffix if ":" in suffix else f"{suffix[:3]}:{suffix[3:]}"
    aware = datetime.fromisoformat(f"{match[1]}T{match[2]}{offset}")
    return vendor_wall_time(aware, mode=mode, site_tz=site_tz)


@dataclass(frozen=True, slots=True)
class Attendance:
    username: str
    start: datetime  # aware
    end: datetime  # aware
    break_minutes: int
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{show_time(self.start)}..{show_time(self.end)}, break {self.break_minutes} min"


def build_attendance_body(
    attendance: Attendance,
    *,
    fields: TimeTrackFields,
    mode: TimestampMode,
    site_tz: ZoneInfo,
) -> dict[str, Any]:
    """The POST body; names come from config (the docs' table and example disagree)."""
    body: dict[str, Any] = {
        fields.username: attendance.username,
        fields.from_: format_timestamp(attendance.start, mode=mode, site_tz=site_tz),
        fields.to: format_timestamp(attendance.end, mode=mode, site_tz=site_tz),
        fields.break_minutes: attendance.break_minutes,
    }
    if attendance.notes:
        body[fields.notes] = NOTES_SEPARATOR.join(attendance.notes)
    return body


# -- matching what TimeTrack already holds -----------------------------------------------------


def _entry_user(entry: Mapping[str, Any], fields: TimeTrackFields) -> str | None:
    for key in ("user", "username", fields.username):
        value = entry.get(key)
        if isinstance(value, Mapping):
            value = value.get("username")
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


class SearchReplyError(ValueError):
    """An attendance search answer the bridge cannot read: never taken as "nothing there"."""


def _entry_time(
    entry: Mapping[str, Any], keys: tuple[str, ...], mode: TimestampMode, site_tz: ZoneInfo
) -> datetime:
    """The entry's time under one of `keys`; SearchReplyError when none can be read (the
    entry may be the very one searched for, under a spelling the bridge does not know)."""
    for key in keys:
        if (parsed := parse_vendor_time(entry.get(key), mode=mode, site_tz=site_tz)) is not None:
            return parsed
    msg = f"an attendance of the person has no readable {' or '.join(dict.fromkeys(keys))}"
    raise SearchReplyError(msg)


def find_same_start(
    entries: Sequence[Mapping[str, Any]],
    attendance: Attendance,
    *,
    fields: TimeTrackFields,
    mode: TimestampMode,
    site_tz: ZoneInfo,
) -> Mapping[str, Any] | None:
    """The entry recording this attendance: same person, same start (to the second).
    SearchReplyError when an entry that may be the person's has no readable start.

    The start alone identifies a shift: a retry may close it at another time than the lost
    attempt did (a dead `out` requeued), and must still find it.
    """
    wanted = vendor_wall_time(attendance.start, mode=mode, site_tz=site_tz)
    for entry in entries:
        user = _entry_user(entry, fields)
        if user is not None and user != attendance.username:
            continue
        if _entry_time(entry, (fields.from_, "from"), mode, site_tz) == wanted:
            return entry
    return None


def find_recent_end(
    entries: Sequence[Mapping[str, Any]],
    *,
    username: str,
    at: datetime,
    fields: TimeTrackFields,
    mode: TimestampMode,
    site_tz: ZoneInfo,
) -> Mapping[str, Any] | None:
    """An entry of this person ending at `at` or up to REPEAT_OUT_WINDOW before it.
    SearchReplyError when an entry that may be the person's has no readable end."""
    latest = vendor_wall_time(at, mode=mode, site_tz=site_tz)
    earliest = vendor_wall_time(at - REPEAT_OUT_WINDOW, mode=mode, site_tz=site_tz)
    for entry in entries:
        user = _entry_user(entry, fields)
        if user is not None and user != username:
            continue
        end = _entry_time(entry, (fields.to, "to"), mode, site_tz)
        if earliest <= end <= latest:
            return entry
    return None


def entries_of(body: bytes) -> list[dict[str, Any]] | None:
    """Attendance entries from a list answer (a JSON array, or an object holding one); None
    when it is neither, or when the list holds anything but objects (unreadable, not empty)."""
    answer = parse_json(body)
    if isinstance(answer, dict):
        answer = next(
            (answer[key] for key in _LIST_KEYS if isinstance(answer.get(key), list)), None
        )
    if not isinstance(answer, list) or not all(isinstance(entry, dict) for entry in answer):
        return None
    return answer
