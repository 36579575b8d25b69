"""Read McTime time entries back: GET {base_url}/times?from=..&to=.. with offsets (a `+` sent
as %2B), at most 366 days apart, header API_KEY. Answer: `{"items": [{"message", "data":
{id, userId, from, to, breaks: [{from, to, automatic}]}}], "valid": true}`.

Breaks McTime adds by itself (`automatic: true`, from target times) were never sent by the
bridge and are left out of the comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from bridge.config import McTimeConfig
from bridge.reconcile.compare import Entry
from bridge.reconcile.fetch import NotConfiguredError, ReadError, fetch_json
from bridge.reconcile.window import Window
from bridge.vendors.mctime.api import TIMES_PATH, auth_headers, limiter_for
from bridge.vendors.mctime.rules import clock_user

CHUNK_DAYS = 366  # the vendor's limit between from and to


def times_url(base_url: str, window: Window) -> URL:
    """The /times URL for a window, offsets percent-encoded by hand (`+` must be %2B)."""
    start = window.day_start(window.first).isoformat()
    end = window.end.astimezone(window.tz).isoformat()
    query = f"from={quote(start, safe='')}&to={quote(end, safe='')}"
    return URL(f"{base_url}{TIMES_PATH}?{query}", encoded=True)


def _utc(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0)


def entry_of(data: Mapping[str, Any]) -> Entry | None:
    """A closed time entry; None for an open one (no end yet). ValueError for one naming no
    person (userId, user_id, user.id) or without a readable start: never left out unread."""
    user, start, end = clock_user(data), _utc(data.get("from")), _utc(data.get("to"))
    if user is None or start is None:
        msg = "a time entry without a readable user or start"
        raise ValueError(msg)
    if end is None:
        return None
    breaks = []
    for item in data.get("breaks") or []:
        if not isinstance(item, Mapping) or item.get("automatic") is True:
            continue
        fr, to = _utc(item.get("from")), _utc(item.get("to"))
        if fr is not None and to is not None:
            breaks.append((fr, to))
    ref = data.get("id")
    return Entry(
        str(user), start, end, tuple(sorted(breaks)), ref=None if ref is None else str(ref)
    )


def parse_times(answer: Any, *, what: str) -> list[Entry]:
    if not isinstance(answer, Mapping) or not isinstance(answer.get("items", []), list):
        msg = f"{what}: answer is not McTime's {{items, valid}} object"
        raise ReadError(msg)
    if answer.get("valid") is False:
        messages = [str(i.get("message")) for i in answer["items"] if isinstance(i, Mapping)]
        msg = f"{what}: McTime answered valid: false ({'; '.join(messages)})"
        raise ReadError(msg)
    entries = []
    for item in answer.get("items") or []:
        data = item.get("data") if isinstance(item, Mapping) else None
        # one item per entry, or one item listing them (the shape is undocumented)
        for one in data if isinstance(data, list) else [data]:
            if not isinstance(one, Mapping):
                msg = f"{what}: an item's data is {type(one).__name__}, not a time entry"
                raise ReadError(msg)
            try:
                entry = entry_of(one)
            except ValueError as err:
                msg = f"{what}: {err}"
                raise ReadError(msg) from None
            if entry is not None:
                entries.append(entry)
    return entries


async def read_entries(
    session: aiohttp.ClientSession,
    config: McTimeConfig,
    window: Window,
    *,
    on_chunk: Callable[[], None] = lambda: None,
) -> list[Entry]:
    """Time entries starting in the window (the window is in the site's zone)."""
    if config.api_key is None or not config.api_key.get_secret_value():
        msg = "sinks.mctime.api_key (or api_key_file) is needed to read time entries back"
        raise NotConfiguredError(msg)
    key = config.api_key
    # McTime allows 10 requests/s per key: the sink's and directory sync's count too
    limiter = limiter_for(
        session, base_url=config.base_url, api_key=key, rate_per_second=config.rate_per_second
    )
    found: dict[object, Entry] = {}
    for chunk in window.chunks(CHUNK_DAYS):
        what = f"McTime times {chunk.first}..{chunk.last}"
        answer = await fetch_json(
            session,
            "GET",
            times_url(config.base_url, chunk),
            headers=auth_headers(key),
            what=what,
            timeout=config.timeout_seconds,
            secrets=[key],
            limiter=limiter,
        )
        for entry in parse_times(answer, what=what):
            if window.contains(entry.start):  # /times lists entries overlapping the range
                found[entry.ref or (entry.person, entry.start)] = entry
        on_chunk()
    return list(found.values())
