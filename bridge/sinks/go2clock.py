"""Go2Clock: PUT one punch per request to /api/punches/, form-urlencoded, header APIKEY.

The vendor answers in the JSON body, not the HTTP status (seed go2clock-7-upload-punches.txt),
so classify_go2clock_reply reads the body first and falls back to the status. The vendor
refuses a second record with the same userid + checktime ("already exists"), which makes a
resend after a lost answer safe: that is why unreadable 2xx answers are retried, not dropped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp

from bridge.config import Go2ClockConfig
from bridge.events import Action
from bridge.redaction import mask_answer, mask_secrets
from bridge.delivery import Job, Result
from bridge.vendors.common import classify_http_status

DETAIL_MAX = 300
EXCERPT_MAX = 120
CHECKTIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def build_punch_form(
    job: Job, *, account_tz: ZoneInfo, checktypes: Mapping[Action, int]
) -> dict[str, str]:
    """The upload form for one job; checktime is the account's wall clock, without offset."""
    if job.time.tzinfo is None:
        # astimezone() would silently take a naive time as the host's local time
        msg = f"job {job.delivery_id} has a naive time"
        raise ValueError(msg)
    fields: dict[str, object | None] = {
        "userid": job.person,
        "checktime": job.time.astimezone(account_tz).strftime(CHECKTIME_FORMAT),
        "checktype": checktypes[job.action],
        "worktype": job.job,
        "latitude": job.lat,
        "longitude": job.lon,
        "eventdescription": job.note,
        "deviceserial": job.terminal,
    }
    return {key: str(value) for key, value in fields.items() if value is not None}


def _short(text: str, limit: int = DETAIL_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _excerpt(body: bytes) -> str:
    text = body[: EXCERPT_MAX * 4].decode("utf-8", errors="replace")
    return _short(text, EXCERPT_MAX) or "(empty)"


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
        return Result.delivered(_short(f"Go2Clock: {_text(error or 'success')}"))
    if status != "failure":
        return None
    if isinstance(error, Mapping) and any(
        "already exists" in _text(reason).lower() for reason in error.values()
    ):
        return Result.duplicate(_short(f"Go2Clock already holds it: {_text(error)}"))
    if message == "Validation Error":
        return Result.dead(_short(f"Go2Clock Validation Error: {_text(error)}"))
    if isinstance(error, str) and "unexpected error" in error.lower():
        return Result.retry(_short(f"Go2Clock: {error}"))
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
        return Result.paused(f"HTTP {status}: {_excerpt(body)}")
    if 300 <= status < 400:
        # redirects are not followed (the APIKEY header must not travel): base_url is wrong
        return Result.paused(f"HTTP {status}: redirected; check sinks.go2clock.base_url")
    if status >= 400 or status < 200:
        return Result.dead(f"HTTP {status}: {_excerpt(body)}")
    if answer is None:
        return Result.retry(f"HTTP {status}: answer is not a JSON object: {_excerpt(body)}")
    if answer.get("status") in ("failure", False):
        text = " ".join(_text(answer[k]) for k in ("message", "error") if answer.get(k))
        return Result.dead(_short(f"Go2Clock failure: {text or _excerpt(body)}"))
    return Result.retry(f"HTTP {status}: unrecognised answer: {_excerpt(body)}")


class Go2ClockSink:
    name = "go2clock"

    def __init__(
        self, *, session: aiohttp.ClientSession, config: Go2ClockConfig, account_tz: ZoneInfo
    ) -> None:
        if config.api_key is None or not config.api_key.get_secret_value():
            msg = "go2clock sink needs an api_key"
            raise ValueError(msg)
        self._api_key = config.api_key  # SecretStr: unwrapped only where it is used
        self._session = session
        self._config = config
        self._account_tz = account_tz
        self._url = f"{config.base_url}/api/punches/"
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)

    async def send(self, job: Job) -> Result:
        form = build_punch_form(
            job, account_tz=self._account_tz, checktypes=self._config.checktypes
        )
        try:
            async with self._session.put(
                self._url,
                # encoded here rather than by aiohttp's FormData: the same bytes for a third
                # of the work, on the path every delivery takes
                data=urlencode(form).encode(),
                headers={
                    "APIKEY": self._api_key.get_secret_value(),
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                timeout=self._timeout,
                allow_redirects=False,  # a redirect would carry the APIKEY header elsewhere
            ) as response:
                body = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as err:
            # CancelledError is a BaseException and passes through untouched
            return Result.retry(self._redact(self._describe(err)))
        # masked once decoded and before it is excerpted: no form or part of an echoed key
        # survives a cut; the detail is masked again after the reply's fields were decoded
        body = mask_answer(body, [self._api_key])
        result = classify_go2clock_reply(status, body, retry_after)
        return dataclasses.replace(result, detail=self._redact(result.detail))

    def _describe(self, err: BaseException) -> str:
        if isinstance(err, TimeoutError) and not str(err):
            return f"{type(err).__name__}: no answer within {self._config.timeout_seconds:g}s"
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__

    def _redact(self, text: str) -> str:
        return _short(mask_secrets(text, [self._api_key]))
