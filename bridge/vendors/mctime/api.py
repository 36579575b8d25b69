"""McTime's API: the paths, the API_KEY header, the rate limiter every user of one key shares,
and what its answers mean (pure, but for the limiter's clock).

McTime allows 10 requests per second per key, counted by arrival, and answers 429 above that.
The sink, the directory source and reconcile all ask through `limiter_for`, so requests made
with one key from one HTTP session (the daemon's) pass one RateLimiter, whoever makes them; it
counts each request from its grant until its exchange ended plus a second (the round trip is
the margin), so no second at McTime ever sees more than `rate_per_second`.
"""

from __future__ import annotations

import enum
import hashlib
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.http import parse_retry_after
from bridge.vendors.common import excerpt, short
from bridge.vendors.ratelimit import RateLimiter

CLOCK_PATH = "/clock"  # POST a clock action; GET the running clocks, 20 per page
USERS_PATH = "/users"  # GET, 20 per page
TIMES_PATH = "/times"  # GET time entries from..to
RATE_WINDOW_MARGIN = 0.05  # seconds added to the 1 s window: clock granularity at both ends

_limiters: weakref.WeakKeyDictionary[
    aiohttp.ClientSession, dict[tuple[str, str, float], RateLimiter]
] = weakref.WeakKeyDictionary()


def auth_headers(api_key: SecretStr) -> dict[str, str]:
    """The key as McTime takes it; a redirect must not carry it (bridge.http follows none)."""
    return {"API_KEY": api_key.get_secret_value()}


def limiter_for(
    session: aiohttp.ClientSession, *, base_url: str, api_key: SecretStr, rate_per_second: float
) -> RateLimiter:
    """The one RateLimiter for this key at this McTime in this session (the sink, directory
    sync and reconcile share it). Per session: a session belongs to one event loop, and so does
    the limiter's lock."""
    digest = hashlib.sha256(api_key.get_secret_value().encode()).hexdigest()
    per_key = _limiters.setdefault(session, {})
    key = (base_url, digest, rate_per_second)
    if key not in per_key:
        per_key[key] = RateLimiter.per_second(rate_per_second, margin=RATE_WINDOW_MARGIN)
    return per_key[key]


# -- answers -----------------------------------------------------------------------------------


class Reply(enum.Enum):
    APPLIED = "applied"  # 200/201: the action took effect
    REFUSED = "refused"  # 400/404 (or valid: false): not applied, the body says why
    NOT_APPLIED = "not_applied"  # 429, 503: safe to send again
    AMBIGUOUS = "ambiguous"  # may or may not have been applied: verify before resending
    PAUSED = "paused"  # credentials refused


@dataclass(frozen=True, slots=True)
class Answer:
    reply: Reply
    detail: str
    retry_after: float | None = None


def parse_reply(body: bytes) -> dict[str, Any] | None:
    """The `{"items": [...], "valid": ...}` object, or None when the body is not one."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("items", []), list):
        return None
    return answer


def item_messages(answer: Mapping[str, Any] | None) -> str:
    """The items' messages, joined; errors can be per item."""
    if answer is None:
        return ""
    texts = []
    for item in answer.get("items") or []:
        message = item.get("message") if isinstance(item, Mapping) else None
        if message not in (None, ""):
            texts.append(message if isinstance(message, str) else json.dumps(message))
    return "; ".join(dict.fromkeys(texts))


def classify_mctime_reply(status: int, body: bytes, retry_after: str | None) -> Answer:
    """Map one POST /clock answer (HTTP status, raw body, Retry-After) to what it means."""
    answer = parse_reply(body)
    messages = item_messages(answer)
    said = messages or excerpt(body)
    if status == 429:
        return Answer(
            Reply.NOT_APPLIED, short(f"McTime 429: {said}"), parse_retry_after(retry_after)
        )
    if status == 503:  # the docs: could not connect within 60 s, try again
        return Answer(Reply.NOT_APPLIED, short(f"McTime 503: {said}"))
    if status >= 500:  # 504: the answer took over 60 s; the work may still have been done
        return Answer(Reply.AMBIGUOUS, short(f"McTime {status}: {said}"))
    if status in (401, 403):
        return Answer(Reply.PAUSED, short(f"McTime {status}: API key refused ({said})"))
    if 300 <= status < 400:
        # redirects are not followed (the API_KEY header must not travel): base_url is wrong
        return Answer(Reply.PAUSED, f"McTime {status}: redirected; check sinks.mctime.base_url")
    if status >= 400 or status < 200:  # 400, 404: reconciled from GET /clock
        return Answer(Reply.REFUSED, short(f"McTime {status}: {said}"))
    if answer is None:
        # a 2xx that is not McTime's answer (a proxy page?): whether it was applied is unknown
        return Answer(Reply.AMBIGUOUS, short(f"McTime {status}: unreadable answer: {said}"))
    if answer.get("valid") is False:
        return Answer(Reply.REFUSED, short(f"McTime {status} (valid: false): {said}"))
    if status == 201:
        return Answer(
            Reply.APPLIED,
            short(f"McTime 201: saved, but an existing entry was overwritten or trimmed: {said}"),
        )
    return Answer(Reply.APPLIED, short(f"McTime {status}: {messages or 'Success'}"))
