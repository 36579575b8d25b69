"""One JSON request to a vendor through bridge.http, its failures turned into SourceError.

Messages name the HTTP status or the kind of network failure, never the URL's parameters or a
header, so they are safe to log and to keep in the cache.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

from bridge.directory.records import SourceError
from bridge.http import BodyTooLargeError, ExchangeError, Limiter, Reply, Session, exchange

RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER = 5.0


async def request_json(
    session: Session,
    method: str,
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109 - the per-request limit, passed on to aiohttp
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    json: object = None,
    data: Mapping[str, str] | None = None,
    what: str = "",
    secrets: Iterable[SecretStr | str] = (),
    limiter: Limiter | None = None,
) -> Any:
    """The answer's JSON; a 429 is waited out (Retry-After, capped) a few times. `what`
    (e.g. the path) leads every error message."""
    try:
        for _ in range(RATE_LIMIT_RETRIES):
            reply = await _once(
                session,
                method,
                url,
                timeout=timeout,
                headers=headers,
                params=params,
                json=json,
                data=data,
                secrets=secrets,
                limiter=limiter,
            )
            if reply.status != 429:
                return _answer(reply)
            await asyncio.sleep(_retry_after(reply))
    except SourceError as err:
        if not what:
            raise
        msg = f"{what}: {err}"
        raise SourceError(msg) from None
    msg = f"{what}: HTTP 429: rate limited" if what else "HTTP 429: rate limited"
    raise SourceError(msg)


async def _once(
    session: Session,
    method: str,
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109
    secrets: Iterable[SecretStr | str],
    limiter: Limiter | None,
    **request: Any,
) -> Reply:
    try:
        return await exchange(
            session,
            method,
            url,
            timeout=timeout,
            secrets=secrets,
            limiter=limiter,
            **request,
        )
    except ExchangeError as err:
        if err.timed_out:
            msg = f"no answer within {timeout:g} s"
        elif isinstance(err.error, BodyTooLargeError):
            msg = str(err.error)
        else:
            msg = f"cannot reach the server ({type(err.error).__name__})"
        raise SourceError(msg) from None


def _answer(reply: Reply) -> Any:
    if reply.status in (401, 403):
        msg = f"HTTP {reply.status}: credentials refused"
        raise SourceError(msg)
    if reply.status >= 300:
        msg = f"HTTP {reply.status}"
        raise SourceError(msg)
    if not reply.body.strip():
        return None  # as aiohttp's response.json() had it: the callers name what is missing
    try:
        return jsonlib.loads(reply.body.decode(reply.charset or "utf-8"))
    except (ValueError, LookupError):
        msg = f"HTTP {reply.status} with an answer that is not JSON"
        raise SourceError(msg) from None


def _retry_after(reply: Reply) -> float:
    seconds = reply.retry_seconds
    return min(1.0 if seconds is None else seconds, MAX_RETRY_AFTER)
