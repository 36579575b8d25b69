"""Read Go2Clock punches back: POST /api/punches_range/ (form start_date, end_date), header
APIKEY, at most 7 days per call as the vendor advises (seed go2clock-6-download-punches.txt).

Answers: `{"status": "success", "message": [{userid, checktime "YYYY-MM-DD HH:MM:SS",
checktype, deleted, ...}], "error": ""}`; an invalid key is `{"status": false, ...}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from bridge.config import Go2ClockConfig
from bridge.reconcile.compare import Punch
from bridge.reconcile.fetch import NotConfiguredError, ReadError, excerpt, fetch_json
from bridge.reconcile.window import Window
from bridge.vendors.go2clock.api import PUNCHES_RANGE_PATH, auth_headers

CHUNK_DAYS = 7  # the vendor: "we do not recommend data over 7 days in one API call"


def parse_download(answer: Any, *, what: str) -> list[Punch]:
    """The punches of one download answer; ReadError for a refusal or an unknown shape."""
    if not isinstance(answer, Mapping):
        msg = f"{what}: answer is not a JSON object"
        raise ReadError(msg)
    status = answer.get("status")
    if status is False:
        msg = f"{what}: Go2Clock refused the API key"
        raise ReadError(msg)
    rows = answer.get("message")
    if status != "success" or not isinstance(rows, list):
        text = answer.get("error") or answer.get("message") or status
        msg = f"{what}: Go2Clock answered {excerpt(str(text).encode())}"
        raise ReadError(msg)
    punches = []
    for row in rows:
        if not isinstance(row, Mapping) or row.get("deleted"):
            continue  # a punch deleted at the vendor is not held
        checktime = str(row.get("checktime", "")).replace("T", " ")[:19]
        try:
            checktype = int(row.get("checktype", 0))
        except (TypeError, ValueError):
            checktype = -1  # unreadable: compares as different, never as matched
        if row.get("userid") is None or len(checktime) != 19:
            continue
        punches.append(Punch(str(row["userid"]), checktime, checktype))
    return punches


async def read_punches(
    session: aiohttp.ClientSession,
    config: Go2ClockConfig,
    window: Window,
    *,
    on_chunk: Callable[[], None] = lambda: None,
) -> list[Punch]:
    """Every punch of the window's days (the window is in the account's zone)."""
    if config.api_key is None or not config.api_key.get_secret_value():
        msg = "sinks.go2clock.api_key (or api_key_file) is needed to read punches back"
        raise NotConfiguredError(msg)
    key = config.api_key
    punches: list[Punch] = []
    for chunk in window.chunks(CHUNK_DAYS):
        what = f"Go2Clock punches {chunk.first}..{chunk.last}"
        answer = await fetch_json(
            session,
            "POST",
            f"{config.base_url}{PUNCHES_RANGE_PATH}",
            data={"start_date": chunk.first.isoformat(), "end_date": chunk.last.isoformat()},
            headers=auth_headers(key),
            what=what,
            timeout=config.timeout_seconds,
            secrets=[key],
        )
        first, last = chunk.first.isoformat(), chunk.last.isoformat()
        punches += [p for p in parse_download(answer, what=what) if first <= p.day <= last]
        on_chunk()
    return punches
