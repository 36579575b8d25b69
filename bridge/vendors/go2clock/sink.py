"""Go2Clock: PUT one punch per request to /api/punches/, form-urlencoded, header APIKEY.

The vendor answers in the JSON body, not the HTTP status (seed go2clock-7-upload-punches.txt),
so api.classify_go2clock_reply reads the body first and falls back to the status. The vendor
refuses a second record with the same userid + checktime ("already exists"), which makes a
resend after a lost answer safe: that is why unreadable 2xx answers are retried, not dropped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

import aiohttp

from bridge.config import Go2ClockConfig
from bridge.delivery import Job, Result
from bridge.events import Action
from bridge.http import ExchangeError, exchange
from bridge.ops.redaction import mask_secrets
from bridge.vendors.common import short
from bridge.vendors.go2clock.api import PUNCHES_PATH, auth_headers, classify_go2clock_reply

CHECKTIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
# What form encoding leaves as it is (urllib.parse.quote_plus's always-safe characters).
_AS_IS = re.compile(r"[A-Za-z0-9_.~-]*")


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


def encode_form(form: Mapping[str, str]) -> bytes:
    """The form as a request body, byte for byte what urllib.parse.urlencode writes; a value
    that needs no escaping (ids, codes: most of them) is taken as it is, which is most of the
    cost saved on the path every delivery takes."""
    return "&".join(f"{_escaped(key)}={_escaped(value)}" for key, value in form.items()).encode()


def _escaped(text: str) -> str:
    return text if _AS_IS.fullmatch(text) else quote_plus(text)


class Go2ClockSink:
    name = "go2clock"
    # Go2Clock answers a punch it already holds as a duplicate: a claim lost to a power cut,
    # which resends the punch, is harmless, so claims for it are not flushed on their own.
    resend_harmless = True

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
        self._url = f"{config.base_url}{PUNCHES_PATH}"

    async def send(self, job: Job) -> Result:
        form = build_punch_form(
            job, account_tz=self._account_tz, checktypes=self._config.checktypes
        )
        try:
            reply = await exchange(
                self._session,
                "PUT",
                self._url,
                # encoded here rather than by aiohttp's FormData: the same bytes for a fraction
                # of the work, on the path every delivery takes
                data=encode_form(form),
                headers={
                    **auth_headers(self._api_key),
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                timeout=self._config.timeout_seconds,
                secrets=[self._api_key],
            )
        except ExchangeError as err:
            return Result.retry(self._redact(str(err)), unreachable=err.unreachable)
        # masked once decoded and before it is excerpted: no form or part of an echoed key
        # survives a cut; the detail is masked again after the reply's fields were decoded
        result = classify_go2clock_reply(reply.status, reply.masked_body(), reply.retry_after)
        return dataclasses.replace(result, detail=self._redact(result.detail))

    def _redact(self, text: str) -> str:
        return short(mask_secrets(text, [self._api_key]))
