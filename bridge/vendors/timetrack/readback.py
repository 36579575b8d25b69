"""Read TimeTrack attendances back: GET {base_url}/api/v2/ext/attendances with from/to
(`YYYY-MM-DDTHH:MM:SS.000Z`, in the clock `sinks.timetrack.timestamps` names), `limit`
(<= 1000) and `page_number` from 0; headers X-TimeTrack-Api-Key / -Secret.

The list answer's shape is undocumented: a JSON array, or an object holding one. Field names
follow `sinks.timetrack.fields` (the docs' table and example disagree), with the table's names
as the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from bridge.config import TimeTrackConfig
from bridge.reconcile.compare import Entry
from bridge.reconcile.fetch import NotConfiguredError, ReadError, fetch_json
from bridge.reconcile.window import Window
from bridge.vendors.timetrack.api import ATTENDANCES_PATH, auth_headers
from bridge.vendors.timetrack.wire import format_timestamp, parse_vendor_time

CHUNK_DAYS = 31
PAGE_LIMIT = 1000  # the documented maximum
MAX_PAGES = 1000
_LIST_KEYS = ("data", "items", "results", "attendances", "entries", "content")


def rows_of(answer: Any, *, what: str) -> list[Mapping[str, Any]]:
    if isinstance(answer, Mapping):
        answer = next((answer[k] for k in _LIST_KEYS if isinstance(answer.get(k), list)), None)
    if not isinstance(answer, list):
        msg = f"{what}: answer holds no list of attendances"
        raise ReadError(msg)
    return [row for row in answer if isinstance(row, Mapping)]


def entry_of(row: Mapping[str, Any], config: TimeTrackConfig, site_tz: ZoneInfo) -> Entry | None:
    """A live attendance as an Entry; None when deleted or unreadable."""
    if row.get("deleted"):
        return None
    fields = config.fields
    user = next((row[k] for k in ("user", "username", fields.username) if row.get(k)), None)
    if isinstance(user, Mapping):
        user = user.get("username")
    zone = UTC if config.timestamps == "utc" else site_tz
    times: list[datetime | None] = []
    for keys in ((fields.from_, "from"), (fields.to, "to")):
        value = next((row[k] for k in keys if row.get(k) is not None), None)
        wall = parse_vendor_time(value, mode=config.timestamps, site_tz=site_tz)
        times.append(None if wall is None else wall.replace(tzinfo=zone).astimezone(UTC))
    start, end = times
    minutes = next(
        (row[k] for k in (fields.break_minutes, "breakMinutes", "minutesBreak") if k in row), 0
    )
    if user is None or start is None or end is None or not isinstance(minutes, int):
        return None
    ref = row.get("id")
    return Entry(str(user), start, end, None, minutes, ref=None if ref is None else str(ref))


async def read_entries(
    session: aiohttp.ClientSession,
    config: TimeTrackConfig,
    window: Window,
    *,
    site_tz: ZoneInfo,
    on_chunk: Callable[[], None] = lambda: None,
) -> list[Entry]:
    """Attendances starting in the window (the window is in the site's zone)."""
    key, secret = config.api_key, config.api_secret
    if key is None or secret is None or not key.get_secret_value():
        msg = "sinks.timetrack.api_key and api_secret are needed to read attendances back"
        raise NotConfiguredError(msg)
    headers = auth_headers(key, secret)
    found: dict[object, Entry] = {}
    for chunk in window.chunks(CHUNK_DAYS):
        params = {
            "from": format_timestamp(chunk.start, mode=config.timestamps, site_tz=site_tz),
            "to": format_timestamp(
                chunk.end - timedelta(seconds=1), mode=config.timestamps, site_tz=site_tz
            ),
            "limit": str(PAGE_LIMIT),
        }
        for entry in await _pages(session, config, params, headers, chunk=chunk, site_tz=site_tz):
            if window.contains(entry.start):
                found[entry.ref or (entry.person, entry.start)] = entry
        on_chunk()
    return list(found.values())


async def _pages(
    session: aiohttp.ClientSession,
    config: TimeTrackConfig,
    params: dict[str, str],
    headers: dict[str, str],
    *,
    chunk: Window,
    site_tz: ZoneInfo,
) -> list[Entry]:
    entries: list[Entry] = []
    for page in range(MAX_PAGES):
        what = f"TimeTrack attendances {chunk.first}..{chunk.last} page {page}"
        answer = await fetch_json(
            session,
            "GET",
            f"{config.base_url}{ATTENDANCES_PATH}",
            params={**params, "page_number": str(page)},
            headers=headers,
            what=what,
            timeout=config.timeout_seconds,
            secrets=list(headers.values()),
        )
        rows = rows_of(answer, what=what)
        entries += [e for row in rows if (e := entry_of(row, config, site_tz)) is not None]
        if len(rows) < PAGE_LIMIT:
            return entries
    msg = f"TimeTrack attendances {chunk.first}..{chunk.last}: more than {MAX_PAGES} pages"
    raise ReadError(msg)
