"""Read OpenTimeClock Q2 time cards (read-only; seed opentimeclock-q2-api.txt).

POST {base_url} with a JSON body {cmd: "api/q2QueryTimeCards", companyId, developerToken,
nextRecord, dateTimeFrom, dateTimeTo, userFullName, departmentName, maxRecords, returnColumns};
the token goes in the body, never in a URL. Answer: {statusCode: SUCCESS|ERROR, message,
nextRecord ("-1": no more), data: [{userFullName, employeeNumber, userName, digitId,
inDateTime, outDateTime ("0000-00-00 00:00:00": still clocked in), entryType (0 = job), ...}]}.
Times are `YYYY-MM-DD HH:MM:SS` without a zone: `reconcile.q2.timezone` (default site).
Time cards carry no breaks: only in and out are compared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from bridge.config import ReconcileQ2Config
from bridge.reconcile.compare import Entry
from bridge.reconcile.fetch import NotConfiguredError, ReadError, fetch_json
from bridge.reconcile.window import Window
from bridge.vendors.q2.api import NO_MORE, QUERY_TIME_CARDS, SUCCESS, auth_fields

CHUNK_DAYS = 31
MAX_PAGES = 10_000
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _time(value: object, tz: ZoneInfo) -> datetime | None:
    if not isinstance(value, str) or value.startswith("0000"):
        return None
    try:
        return datetime.strptime(value.strip(), TIME_FORMAT).replace(tzinfo=tz).astimezone(UTC)
    except ValueError:
        return None


def card_entry(card: Mapping[str, Any], *, person_field: str, tz: ZoneInfo) -> Entry | None:
    """A closed job time card as an Entry; None for PTO/adjustments and open cards."""
    if str(card.get("entryType", 0)) != "0":
        return None
    person = card.get(person_field)
    start, end = _time(card.get("inDateTime"), tz), _time(card.get("outDateTime"), tz)
    if person in (None, "") or start is None or end is None:
        return None
    return Entry(str(person), start, end)


def parse_page(answer: Any, *, what: str) -> tuple[list[Mapping[str, Any]], str]:
    """(the cards, nextRecord) of one answer; ReadError for statusCode ERROR."""
    if not isinstance(answer, Mapping):
        msg = f"{what}: answer is not a JSON object"
        raise ReadError(msg)
    if answer.get("statusCode") != SUCCESS:
        msg = f"{what}: Q2 answered {answer.get('statusCode')}: {answer.get('message')}"
        raise ReadError(msg)
    data = answer.get("data") or []
    if not isinstance(data, list):
        msg = f"{what}: data is not a list"
        raise ReadError(msg)
    return [c for c in data if isinstance(c, Mapping)], str(answer.get("nextRecord", NO_MORE))


async def read_entries(
    session: aiohttp.ClientSession,
    config: ReconcileQ2Config,
    window: Window,
    *,
    on_chunk: Callable[[], None] = lambda: None,
) -> list[Entry]:
    """Job time cards starting in the window (the window is in the Q2 zone)."""
    token = config.developer_token
    if not config.company_id or token is None or not token.get_secret_value():
        msg = "reconcile.q2.company_id and developer_token are needed to read time cards"
        raise NotConfiguredError(msg)
    entries: list[Entry] = []
    for chunk in window.chunks(CHUNK_DAYS):
        body = {
            "cmd": QUERY_TIME_CARDS,
            **auth_fields(config.company_id, token),
            "dateTimeFrom": chunk.day_start(chunk.first).strftime(TIME_FORMAT),
            "dateTimeTo": (chunk.day_start(chunk.last) + timedelta(days=1, seconds=-1)).strftime(
                TIME_FORMAT
            ),
            "userFullName": "",
            "departmentName": "",
            "maxRecords": str(config.max_records),
            "returnColumns": "",
        }
        for card in await _pages(session, config, body, chunk):
            entry = card_entry(card, person_field=config.person_field, tz=window.tz)
            if entry is not None and window.contains(entry.start):
                entries.append(entry)
        on_chunk()
    return entries


async def _pages(
    session: aiohttp.ClientSession, config: ReconcileQ2Config, body: dict[str, str], chunk: Window
) -> list[Mapping[str, Any]]:
    cards: list[Mapping[str, Any]] = []
    next_record, seen = "0", set()
    for _ in range(MAX_PAGES):
        seen.add(next_record)
        what = f"Q2 time cards {chunk.first}..{chunk.last} from record {next_record}"
        answer = await fetch_json(
            session,
            "POST",
            config.base_url,
            json={**body, "nextRecord": next_record},
            what=what,
            timeout=config.timeout_seconds,
            secrets=[body["developerToken"]],
        )
        page, next_record = parse_page(answer, what=what)
        cards += page
        if next_record == NO_MORE:
            return cards
        if next_record in seen:
            msg = f"{what}: nextRecord {next_record} repeats"
            raise ReadError(msg)
    msg = f"Q2 time cards {chunk.first}..{chunk.last}: more than {MAX_PAGES} pages"
    raise ReadError(msg)
