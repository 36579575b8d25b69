"""The one HTTP exchange every vendor uses: a timeout on every request, no redirects (a redirect
would carry the key headers elsewhere), the body read up to a size limit, Retry-After parsed,
and secrets masked (bridge.ops.redaction) before any of the answer or of an error is shown.

`exchange` sends one request and returns a `Reply`, or raises `ExchangeError` when no answer was
read (a network failure, a timeout, an answer too large). It retries nothing and classifies
nothing: what an answer means is each vendor's `api.py`; how often to ask again is its caller's.
CancelledError is a BaseException and passes through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from pydantic import SecretStr

from bridge.ops.redaction import mask_answer, mask_secrets

MAX_BODY_BYTES = 32 * 1024 * 1024  # a page of 5,000 Q2 users is a few MB; a proxy's junk stops here
_READ_CHUNK = 64 * 1024

# Raised before the request left: the server cannot have acted on it.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


# The HTTP client every request to a vendor goes through: other packages name it by this alias
# and open it with new_session(), so that aiohttp's client stays in this module and vendors/.
Session = aiohttp.ClientSession


def new_session() -> Session:
    """The one session a process shares for its vendor requests. No session-wide timeout:
    every exchange sets its own."""
    return aiohttp.ClientSession()


class Grant(Protocol):
    """A limiter's leave for one request; told when the exchange ended."""

    def done(self) -> None: ...


class Limiter(Protocol):
    """What `exchange` waits on before each request (a vendor's RateLimiter). The Grant it
    returns, if any, is told when the exchange ends, answered or not: a vendor that counts
    requests by arrival has seen this one by then, so the limiter can count from there."""

    async def acquire(self) -> Grant | None: ...


class BodyTooLargeError(Exception):
    """The answer was longer than the exchange's limit; it was not read to the end."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


def _plain(secrets: Iterable[SecretStr | str]) -> tuple[str, ...]:
    values = (s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets)
    return tuple(value for value in values if value)


def describe_error(error: BaseException, timeout: float) -> str:
    """`Type: message`, or for a bare timeout `TimeoutError: no answer within 15s` (unmasked)."""
    if isinstance(error, TimeoutError) and not str(error):
        return f"{type(error).__name__}: no answer within {timeout:g}s"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class ExchangeError(Exception):
    """No answer was read. `error` is the cause; str() is its description with every secret of
    the exchange masked."""

    def __init__(self, error: BaseException, *, timeout: float, secrets: tuple[str, ...]) -> None:
        self.error = error
        self.timeout = timeout
        super().__init__(mask_secrets(describe_error(error, timeout), secrets))

    @property
    def not_sent(self) -> bool:
        """True when the request never left: the server cannot have acted on it."""
        return isinstance(self.error, _NOT_SENT)

    @property
    def never_connected(self) -> bool:
        return isinstance(self.error, aiohttp.ClientConnectorError)

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, TimeoutError)

    @property
    def unreachable(self) -> bool:
        """Connection refused or no answer in time: the vendor looks down, not merely flaky
        (a dropped connection or an oversized answer is not counted as such)."""
        return self.never_connected or self.timed_out


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer as read. `body` is raw: show it only through `masked_body` or `excerpt`."""

    status: int
    body: bytes
    retry_after: str | None  # the header as sent
    charset: str | None
    secrets: tuple[str, ...] = ()

    @property
    def retry_seconds(self) -> float | None:
        return parse_retry_after(self.retry_after)

    def masked_body(self) -> bytes:
        """The body with every secret masked, for code that decodes and quotes it."""
        return mask_answer(self.body, self.secrets)

    def excerpt(self, limit: int) -> str:
        """The masked body as one short line: masked once decoded, before the cut."""
        text = " ".join(self.masked_body()[: limit * 4].decode("utf-8", errors="replace").split())
        return (text[: limit - 3] + "...") if len(text) > limit else text or "(empty)"


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        msg = f"answer of {response.content_length} bytes is over the {limit}-byte limit"
        raise BodyTooLargeError(msg)
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            msg = f"answer is over the {limit}-byte limit"
            raise BodyTooLargeError(msg)
        chunks.append(chunk)
    return b"".join(chunks)


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: Any,  # str or an encoded yarl.URL
    *,
    timeout: float,  # noqa: ASYNC109 - the per-request limit, passed on to aiohttp
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[SecretStr | str] = (),
    limiter: Limiter | None = None,
    max_bytes: int = MAX_BODY_BYTES,
    **request: Any,  # params, json, data: as aiohttp takes them
) -> Reply:
    """Send one request and read its answer; ExchangeError when none could be read."""
    hidden = _plain(secrets)
    grant = await limiter.acquire() if limiter is not None else None
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,  # a redirect would carry the key headers elsewhere
            **request,
        ) as response:
            body = await _read(response, max_bytes)
            return Reply(
                response.status,
                body,
                response.headers.get("Retry-After"),
                response.charset,
                hidden,
            )
    except (aiohttp.ClientError, TimeoutError, BodyTooLargeError) as err:
        raise ExchangeError(err, timeout=timeout, secrets=hidden) from None
    finally:
        if grant is not None:
            grant.done()  # cancelled too: whatever was sent has arrived by now
