"""The one read every reconcile reader uses: bridge.http's exchange, a few retries on
429/502/503, and errors that never carry a secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

from bridge.http import ExchangeError, Limiter, Session, exchange
from bridge.ops.redaction import mask_secrets, mask_values

ATTEMPTS = 3
EXCERPT_MAX = 160
RETRY_STATUSES = frozenset({429, 502, 503})


class ReadError(Exception):
    """The vendor could not be read, so nothing was compared. str() holds no secret."""


class NotConfiguredError(ReadError):
    """The config lacks what reading this vendor needs (its credentials): a config error."""


def excerpt(body: bytes) -> str:
    text = " ".join(body[: EXCERPT_MAX * 4].decode("utf-8", errors="replace").split())
    return (text[: EXCERPT_MAX - 3] + "...") if len(text) > EXCERPT_MAX else text or "(empty)"


async def fetch_json(
    session: Session,
    method: str,
    url: str | Any,
    *,
    what: str,
    timeout: float,  # noqa: ASYNC109 - a per-request aiohttp timeout, not the caller's deadline
    secrets: Iterable[SecretStr | str] = (),
    limiter: Limiter | None = None,
    **kwargs: Any,
) -> Any:
    """The parsed JSON of a 200 answer; ReadError for anything else (after retries of
    429/502/503, which change nothing at the vendor: every read is safe to repeat)."""
    hidden = [s for s in secrets if s]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            reply = await exchange(
                session,
                method,
                url,
                timeout=timeout,
                secrets=hidden,
                limiter=limiter,
                **kwargs,
            )
        except ExchangeError as err:
            cause = err.error
            detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
            raise ReadError(mask_secrets(f"{what}: {detail}", hidden)) from None
        if reply.status in RETRY_STATUSES and attempt < ATTEMPTS:
            await asyncio.sleep(min(5.0, reply.retry_seconds or 0.5 * attempt))
            continue
        if reply.status != 200:
            msg = f"{what}: HTTP {reply.status}: {reply.excerpt(EXCERPT_MAX)}"
            raise ReadError(msg)
        try:
            answer = json.loads(reply.body)
        except (ValueError, UnicodeDecodeError):
            shown = reply.excerpt(EXCERPT_MAX)
            msg = f"{what}: answer is not JSON: {shown}"
            raise ReadError(msg) from None
        # masked once decoded: a key the vendor quoted back escaped (`\/`, `\u0041`) is plain
        # text now, and the readers put the answer's fields into their error messages
        return mask_values(answer, hidden)
    raise AssertionError  # pragma: no cover - the loop returns or raises
