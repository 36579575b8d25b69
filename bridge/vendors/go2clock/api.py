"""Go2Clock's API: paths, the APIKEY header, and what its answers mean (pure).

Every endpoint takes the key in header APIKEY and answers in the JSON body, not the HTTP status
(seeds go2clock-6-download-punches.txt, go2clock-7-upload-punches.txt): `{"status": "success",
"message": ..., "error": ...}`, or `{"status": false, "error": "Invalid API key "}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from bridge.delivery import Result
from bridge.vendors.common import classify_http_status, excerpt, short

PUNCHES_PATH = "/api/punches/"  # PUT one punch, form-urlencoded
PUNCHES_RANGE_PATH = "/api/punches_range/"  # POST start_date, end_date: punches back
USERS_PATH = "/api/users/"  # POST: userid, idcard (the badge)
EMPLOYEES_PATH = "/api/employees/"  # POST: names, e-mail, department


def auth_headers(api_key: SecretStr) -> dict[str, str]:
    """The key as Go2Clock takes it; a redirect must not carry it (bridge.http follows none)."""
    return {"APIKEY": api_key.get_secret_value()}


def _text(value: Any) -> str:
    """A vendor field as short text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parse_answer(body: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return answer if isinstance(answer, dict) else None


def _classify_documented(answer: Mapping[str, Any]) -> Result | None:
    """The Result for one of the five documented answers, or None for anything else."""
    status, error, message = answer.get("status"), answer.get("error"), answer.get("message")
    # `is False`: the invalid-key answer is the only one whose status is a boolean
    if status is False and "api key" in _text(error).lower():
        return Result.paused("Go2Clock refused the API key (Invalid API key)")
    if status == "success":
        return Result.delivered(short(f"Go2Clock: {_text(error or 'success')}"))
    if status != "failure":
        return None
    if isinstance(error, Mapping) and any(
        "already exists" in _text(reason).lower() for reason in error.values()
    ):
        return Result.duplicate(short(f"Go2Clock already holds it: {_text(error)}"))
    if message == "Validation Error":
        return Result.dead(short(f"Go2Clock Validation Error: {_text(error)}"))
    if isinstance(error, str) and "unexpected error" in error.lower():
        return Result.retry(short(f"Go2Clock: {error}"))
    return None


def classify_go2clock_reply(status: int, body: bytes, retry_after: str | None) -> Result:
    """Map one upload answer (HTTP status, raw body, Retry-After header) to a Result."""
    answer = _parse_answer(body)
    if answer is not None and (documented := _classify_documented(answer)) is not None:
        return documented
    if (by_status := classify_http_status(status, retry_after)) is not None:
        return by_status
    if status in (401, 403):
        # credentials refused without the documented body: still stop the sink, keep events
        return Result.paused(f"HTTP {status}: {excerpt(body)}")
    if 300 <= status < 400:
        # redirects are not followed (the APIKEY header must not travel): base_url is wrong
        return Result.paused(f"HTTP {status}: redirected; check sinks.go2clock.base_url")
    if status >= 400 or status < 200:
        return Result.dead(f"HTTP {status}: {excerpt(body)}")
    if answer is None:
        return Result.retry(f"HTTP {status}: answer is not a JSON object: {excerpt(body)}")
    if answer.get("status") in ("failure", False):
        text = " ".join(_text(answer[k]) for k in ("message", "error") if answer.get(k))
        return Result.dead(short(f"Go2Clock failure: {text or excerpt(body)}"))
    return Result.retry(f"HTTP {status}: unrecognised answer: {excerpt(body)}")
