"""The one HTTP read every reader uses: timeout, no redirects, a few retries on 429/503,
and errors that never carry a secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import aiohttp

from bridge.redaction import mask_answer, mask_secrets, mask_values
from bridge.http import parse_retry_after

ATTEMPTS = 3
EXCERPT_MAX = 160
RETRY_STATUSES = frozenset({429, 502, 503})


class ReadError(Exception):
    """The vendor could not be read, so nothing was compared. str() holds no secret."""


def excerpt(body: bytes) -> str:
    text = " ".join(body[: EXCERPT_MAX * 4].decode("utf-8", errors="replace").split())
    return (text[: EXCERPT_MAX - 3] + "...") if len(text) > EXCERPT_MAX else text or "(empty)"


async def fetch_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str | Any,
    *,
    what: str,
    timeout: float,  # noqa: ASYNC109 - a per-request aiohttp timeout, not the caller's deadline
    secrets: Iterable[str] = (),
    **kwargs: Any,
) -> Any:
    """The parsed JSON of a 200 answer; ReadError for anything else (after retries of
    429/502/503, which change nothing at the vendor: every read is safe to repeat)."""
    hidden = [s for s in secrets if s]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with session.request(
                method,
                url,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,  # a redirect would carry the key elsewhere
                **kwargs,
            ) as response:
                body = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as err:
            detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise ReadError(mask_secrets(f"{what}: {detail}", hidden)) from None
        if status in RETRY_STATUSES and attempt < ATTEMPTS:
            await asyncio.sleep(min(5.0, parse_retry_after(retry_after) or 0.5 * attempt))
            continue
        if status != 200:
            raise ReadError(f"{what}: HTTP {status}: {excerpt(mask_answer(body, hidden))}")
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            shown = excerpt(mask_answer(body, hidden))
            raise ReadError(f"{what}: answer is not JSON: {shown}") from None
        # masked once decoded: a key the vendor quoted back escaped (`\/`, `\u0041`) is plain
        # text now, and the readers put the answer's fields into their error messages
        return mask_values(answer, hidden)
    raise AssertionError  # pragma: no cover - the loop returns or raises
