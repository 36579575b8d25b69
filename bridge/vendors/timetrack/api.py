"""TimeTrack Enterprise's API: the paths, the key and secret headers, and what its answers mean
(pure; seed timetrack-attendances-api.txt). Errors come as `{"errors": [{title, status, code,
detail}]}`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from bridge.delivery import Result
from bridge.vendors.common import classify_http_status, excerpt, short

ATTENDANCES_PATH = "/api/v2/ext/attendances"  # POST one; GET a page (from, to, limit, page_number)
USERS_PATH = "/api/v2/ext/users"  # GET a page (page_number, limit)


def auth_headers(api_key: SecretStr, api_secret: SecretStr) -> dict[str, str]:
    """Key and secret as TimeTrack takes them; a redirect must not carry them (bridge.http
    follows none)."""
    return {
        "X-TimeTrack-Api-Key": api_key.get_secret_value(),
        "X-TimeTrack-Api-Secret": api_secret.get_secret_value(),
    }


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def error_text(body: bytes) -> str:
    """The `errors[].detail` texts (else titles) of `{"errors":[{title,status,code,detail}]}`,
    or an excerpt of the body."""
    answer = parse_json(body)
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if isinstance(errors, list):
        texts = []
        for error in errors:
            if not isinstance(error, dict):
                continue
            text = error.get("detail") or error.get("title")
            if text:
                code = error.get("code")
                texts.append(f"{text} (code {code})" if code not in (None, "") else str(text))
        if texts:
            return "; ".join(texts)
    return excerpt(body)


def classify_timetrack_reply(status: int, body: bytes, retry_after: str | None) -> Result:
    """Map one TimeTrack answer (HTTP status, raw body, Retry-After header) to a Result."""
    if 200 <= status < 300:
        return Result.delivered(f"HTTP {status}")
    if (by_status := classify_http_status(status, retry_after)) is not None:
        return by_status
    if status in (401, 403):
        # 403 as well: a key without the rights fails every event alike; keep them, stop
        return Result.paused(
            short(f"TimeTrack refused the API key/secret: HTTP {status}: {error_text(body)}")
        )
    if 300 <= status < 400:
        # redirects are not followed (the key headers must not travel): base_url is wrong
        return Result.paused(f"HTTP {status}: redirected; check sinks.timetrack.base_url")
    return Result.dead(short(f"TimeTrack HTTP {status}: {error_text(body)}"))
