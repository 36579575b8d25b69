"""One JSON request to a vendor, with a timeout, its failures turned into SourceError.

Messages name the HTTP status or the kind of network failure, never the URL's parameters or a
header, so they are safe to log and to keep in the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from bridge.directory_sources.records import SourceError

RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER = 5.0


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109 - the per-request limit, passed on to aiohttp
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    json: object = None,
    data: Mapping[str, str] | None = None,
    what: str = "",
) -> Any:
    """The answer's JSON; a 429 is waited out (Retry-After, capped) a few times. `what`
    (e.g. the path) leads every error message."""
    try:
        for _ in range(RATE_LIMIT_RETRIES):
            status, retry_after, body = await _once(
                session,
                method,
                url,
                timeout=timeout,
                headers=headers,
                params=params,
                json=json,
                data=data,
            )
            if status != 429:
                return body
            await asyncio.sleep(retry_after)
        msg = "HTTP 429: rate limited"
        raise SourceError(msg)
    except SourceError as err:
        if not what:
            raise
        msg = f"{what}: {err}"
        raise SourceError(msg) from None


async def _once(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109
    headers: Mapping[str, str] | None,
    params: Mapping[str, str] | None,
    json: object,
    data: Mapping[str, str] | None,
) -> tuple[int, float, Any]:
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            params=params,
            json=json,
            data=data,
            allow_redirects=False,  # a redirect would carry the key headers elsewhere
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            if response.status == 429:
                return 429, _retry_after(response.headers.get("Retry-After")), None
            if response.status in (401, 403):
                msg = f"HTTP {response.status}: credentials refused"
                raise SourceError(msg)
            if response.status >= 300:
                msg = f"HTTP {response.status}"
                raise SourceError(msg)
            try:
                return response.status, 0.0, await response.json(content_type=None)
            except ValueError:
                msg = f"HTTP {response.status} with an answer that is not JSON"
                raise SourceError(msg) from None
    except TimeoutError:
        msg = f"no answer within {timeout:g} s"
        raise SourceError(msg) from None
    except aiohttp.ClientError as err:
        msg = f"cannot reach the server ({type(err).__name__})"
        raise SourceError(msg) from None


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
