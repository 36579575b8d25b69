"""McTime: POST {base_url}/clock with header API_KEY, one clock action per punch.

`break` toggles on the server and nothing is idempotent (no idempotency keys), so a resend
after a lost answer could end a break instead of starting one, or start a second clock. The sink
therefore never repeats a send blindly: the person's clock (off / running / on_break) is kept as
the sink state (rules.py), actions that would not change it are dropped as
duplicates, and whenever the bridge's view may be wrong (a lost answer, a refusal, an unknown
clock before a `break`) it reads GET {base_url}/clock first and goes by what the server shows.

Every request (POST and GET) passes the RateLimiter of this key (api.limiter_for), shared with
directory sync and reconcile: McTime allows 10 per second and answers 429 above that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from zoneinfo import ZoneInfo

import aiohttp

from bridge.config import McTimeConfig
from bridge.delivery import Job, Outcome, Result
from bridge.http import ExchangeError, Reply, exchange
from bridge.ops.redaction import mask_secrets
from bridge.vendors.common import DETAIL_MAX, excerpt, short
from bridge.vendors.mctime.api import (
    CLOCK_PATH,
    auth_headers,
    classify_mctime_reply,
    item_messages,
    limiter_for,
    parse_reply,
)
from bridge.vendors.mctime.api import (
    Reply as Meaning,
)
from bridge.vendors.mctime.rules import (
    PAGE_SIZE,
    TARGET,
    Clock,
    ClockReplyError,
    Step,
    build_clock_body,
    clock_state,
    find_clock,
    plan,
    read_state,
    reconcile_refusal,
    unverified_state,
)

MAX_CLOCK_PAGES = 200  # 4000 running clocks
# A GET /clock reply the bridge cannot read is retried; from this attempt of a delivery on it
# is held (reply shown, masked) for a person to look at: never read as "no running clock".
UNREADABLE_HOLD_ATTEMPT = 5


class McTimeSink:
    name = "mctime"

    def __init__(
        self, *, session: aiohttp.ClientSession, config: McTimeConfig, site_tz: ZoneInfo
    ) -> None:
        if config.api_key is None or not config.api_key.get_secret_value():
            msg = "mctime sink needs an api_key"
            raise ValueError(msg)
        self._api_key = config.api_key  # SecretStr: unwrapped only where it is used
        self._session = session
        self._config = config
        self._site_tz = site_tz
        self._url = f"{config.base_url}{CLOCK_PATH}"
        self.limiter = limiter_for(
            session,
            base_url=config.base_url,
            api_key=config.api_key,
            rate_per_second=config.rate_per_second,
        )

    async def send(self, job: Job) -> Result:
        result = await self._send(job)
        return dataclasses.replace(result, detail=self._redact(result.detail))

    async def _send(self, job: Job) -> Result:
        saved = read_state(job.state)
        base, verified = saved.clock, False
        # An earlier attempt of this very delivery may have reached McTime although its answer
        # was never saved (lost, or the bridge was killed or stopped while waiting for it).
        marked = saved.delivery in (None, job.delivery_id) and saved.unverified is job.action
        may_be_applied = marked or job.attempt > 1
        if saved.unverified is not None or may_be_applied:
            # The last send for this person may or may not have been applied: look first.
            server = await self.server_clock(job.person, job.attempt)
            if isinstance(server, Result):
                return server  # state None: the marker stays for the next attempt
            if may_be_applied and server is TARGET[job.action]:
                detail = f"McTime already shows {job.action.value} (the earlier answer was lost)"
                return Result.duplicate(detail, state=clock_state(server))
            base, verified = server, True
        decision = plan(base, job.action, verified=verified)
        if decision.step is Step.VERIFY:
            server = await self.server_clock(job.person, job.attempt)
            if isinstance(server, Result):
                return server
            base, verified = server, True
            decision = plan(base, job.action, verified=True)
        if decision.step is Step.DUPLICATE:
            return Result.duplicate(decision.reason, state=_state(base))
        if decision.step is Step.DEAD:
            return Result.dead(decision.reason, state=_state(base))
        return await self._post(job, base, verified=verified)

    async def _post(self, job: Job, base: Clock | None, *, verified: bool) -> Result:
        body = build_clock_body(job, site_tz=self._site_tz, config=self._config)
        keep = _state(base) if verified else None  # a checked clock replaces any stale marker
        try:
            reply = await self._exchange("POST", json=body)
        except ExchangeError as err:
            if err.not_sent:
                return Result.retry(str(err), state=keep, unreachable=err.unreachable)
            # Sent, answer lost: maybe applied. CancelledError (a BaseException) passes through.
            detail = f"{err}; {body['action']} unverified, checked before a resend"
            return Result.retry(
                short(detail), state=unverified_state(base, job), unreachable=err.unreachable
            )
        status = reply.status
        answer = classify_mctime_reply(status, reply.masked_body(), reply.retry_after)
        if answer.reply is Meaning.APPLIED:
            return Result.delivered(
                answer.detail, state=clock_state(TARGET[job.action]), warn=status == 201
            )
        if answer.reply is Meaning.PAUSED:
            return Result.paused(answer.detail)
        if answer.reply is Meaning.NOT_APPLIED:
            if status == 429:
                self.limiter.hold(answer.retry_after or 1.0)
            return Result.retry(answer.detail, answer.retry_after, state=keep)
        if answer.reply is Meaning.AMBIGUOUS:
            return Result.retry(answer.detail, state=unverified_state(base, job))
        return await self._refused(job, answer.detail, keep)

    async def _refused(self, job: Job, refusal: str, keep: dict[str, str] | None) -> Result:
        """McTime refused the action: is the server's clock not what the bridge thought?"""
        server = await self.server_clock(job.person, job.attempt)
        if isinstance(server, Result):
            if server.outcome is Outcome.PAUSED:
                return server
            detail = short(f"{refusal}; then {server.detail}")
            if server.outcome is Outcome.HELD:
                return Result.held(detail, state=keep)
            return Result.retry(detail, server.retry_after, state=keep)
        return reconcile_refusal(job.action, server, refusal)

    async def server_clock(self, person: str, attempt: int = 1) -> Clock | Result:
        """The person's clock as GET /clock shows it (pages of 20 running clocks), or the
        Result to return when it cannot be read (never a guess): a retry, or from attempt
        UNREADABLE_HOLD_ATTEMPT of a delivery on, held when the reply itself is unreadable."""
        page, previous = self._config.clock_first_page, None
        for _ in range(MAX_CLOCK_PAGES):
            try:
                reply = await self._exchange("GET", params={"page": str(page)})
            except ExchangeError as err:
                return Result.retry(short(f"GET /clock: {err}"), unreachable=err.unreachable)
            raw = reply.masked_body()  # before any excerpt of it
            status, retry_after = reply.status, reply.retry_after
            answer = parse_reply(raw)
            if status == 200 and answer is None:
                return _unreadable(raw, "not McTime's {items, valid} object", attempt)
            if status != 200 or answer is None or answer.get("valid") is False:
                return self._clock_read_failed(status, raw, retry_after)
            try:
                found, count, users = find_clock(answer, person)
            except ClockReplyError as err:
                return _unreadable(raw, str(err), attempt)
            if found is not None:
                return found
            if count < PAGE_SIZE:
                return Clock.OFF
            if users == previous:
                detail = f"GET /clock repeats page {page}; check sinks.mctime.clock_first_page"
                return Result.retry(detail)
            page, previous = page + 1, users
        return Result.retry(f"GET /clock: person not found in {MAX_CLOCK_PAGES} pages")

    def _clock_read_failed(self, status: int, raw: bytes, retry_after: str | None) -> Result:
        answer = classify_mctime_reply(status, raw, retry_after)
        if answer.reply is Meaning.PAUSED:
            return Result.paused(f"GET /clock: {answer.detail}")
        if status == 429:
            self.limiter.hold(answer.retry_after or 1.0)
        text = item_messages(parse_reply(raw)) if 200 <= status < 300 else ""
        detail = f"GET /clock: {text}" if text else f"GET /clock: {answer.detail}"
        return Result.retry(short(detail), answer.retry_after)

    async def _exchange(
        self, method: str, *, json: object = None, params: Mapping[str, str] | None = None
    ) -> Reply:
        return await exchange(
            self._session,
            method,
            self._url,
            headers=auth_headers(self._api_key),
            timeout=self._config.timeout_seconds,
            secrets=[self._api_key],
            limiter=self.limiter,
            json=json,
            params=params,
        )

    def _redact(self, text: str) -> str:
        return short(mask_secrets(text, [self._api_key]), DETAIL_MAX)


def _unreadable(raw: bytes, why: str, attempt: int) -> Result:
    """A GET /clock reply the bridge cannot interpret: retried, then held with the (masked)
    reply shown; the saved state (and any unverified marker) stays as it is."""
    detail = short(f"GET /clock: unreadable reply ({why}): {excerpt(raw)}")
    if attempt >= UNREADABLE_HOLD_ATTEMPT:
        return Result.held(f"{detail}; held after {attempt} attempts")
    return Result.retry(detail)


def _state(clock: Clock | None) -> dict[str, str] | None:
    return None if clock is None else clock_state(clock)
