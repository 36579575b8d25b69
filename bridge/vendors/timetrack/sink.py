"""TimeTrack Enterprise: one attendance (from, to, break minutes) per shift.

POST {base_url}/api/v2/ext/attendances with headers X-TimeTrack-Api-Key / -Secret, JSON
(seed timetrack-attendances-api.txt). The per-person shift state machine is pure and lives in
shift.py, the wire format in wire.py, the answers in api.py; this module does the HTTP and maps
answers to outcomes.

TimeTrack documents no duplicate signal, so a create whose answer was lost (timeout, dropped
connection, 5xx from a proxy) leaves the state marked "unverified": the next attempt first
lists the person's attendances around the shift and only creates when none starts at the same
second. A search that fails or cannot be read never leads to a create.

Timestamps: UTC by default; with `timestamps: local` the site's wall time, still written with
the `.000Z` suffix, because the vendor's timer docs say to send local time "in the same timezone
like you are currently" in this very format. Around the autumn clock change that local time is
ambiguous; TimeTrack cannot be told which 02:30 is meant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from bridge.config import TimeTrackConfig
from bridge.delivery import Job, Outcome, Result
from bridge.events import Action
from bridge.http import ExchangeError, exchange
from bridge.ops.redaction import mask_secrets
from bridge.vendors.common import DETAIL_MAX, excerpt, short
from bridge.vendors.timetrack.api import (
    ATTENDANCES_PATH,
    auth_headers,
    classify_timetrack_reply,
    parse_json,
)
from bridge.vendors.timetrack.shift import (
    ShiftStateError,
    closed_attendance,
    plan_job,
    read_state,
)
from bridge.vendors.timetrack.wire import (
    Attendance,
    SearchReplyError,
    build_attendance_body,
    entries_of,
    find_recent_end,
    find_same_start,
    format_timestamp,
    show_time,
)

SEARCH_LIMIT = 1000  # the documented maximum page size
SEARCH_MAX_PAGES = 10  # beyond that the answer is inconclusive: retry, never create
SEARCH_MARGIN = timedelta(days=1)  # the vendor's from/to filter semantics are undocumented
# A search answer the bridge cannot read is retried; from this attempt of a delivery on it is
# held (answer shown, masked) for a person to look at: never read as "nothing there".
UNREADABLE_HOLD_ATTEMPT = 5

Matcher = Callable[[list[dict[str, Any]]], Mapping[str, Any] | None]


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    retry_after: str | None


class TimeTrackSink:
    name = "timetrack"

    def __init__(
        self, *, session: aiohttp.ClientSession, config: TimeTrackConfig, site_tz: ZoneInfo
    ) -> None:
        key, secret = config.api_key, config.api_secret
        if key is None or not key.get_secret_value():
            msg = "timetrack sink needs an api_key"
            raise ValueError(msg)
        if secret is None or not secret.get_secret_value():
            msg = "timetrack sink needs an api_secret"
            raise ValueError(msg)
        self._key, self._secret = key, secret  # SecretStr: unwrapped only where it is used
        self._session = session
        self._config = config
        self._site_tz = site_tz
        self._url = f"{config.base_url}{ATTENDANCES_PATH}"
        self._max_shift = timedelta(hours=config.max_shift_hours)

    async def send(self, job: Job) -> Result:
        result = await self._send(job)
        return dataclasses.replace(result, detail=self._redact(result.detail))

    async def _send(self, job: Job) -> Result:
        state: Mapping[str, Any] = job.state
        prefix = ""
        try:
            closed = closed_attendance(state, username=job.person)
        except ShiftStateError as err:
            return Result.held(f"saved TimeTrack state unreadable ({err}); reset it to {{}}")
        if closed is not None:
            # an operator closed the shift (complete_shift): record it before this job
            flushed = await self._record(
                closed, state, after={}, done="closed shift recorded", attempt=job.attempt
            )
            if flushed.outcome is Outcome.PERMANENT_FAILURE:
                return Result.held(
                    short(f"the operator-closed shift was refused: {flushed.detail}")
                )
            if flushed.outcome not in (Outcome.DELIVERED, Outcome.DUPLICATE):
                return flushed
            if job.action is Action.OUT and job.time == closed.end:
                return Result.delivered(short(f"{flushed.detail} ({closed.describe()})"), state={})
            state, prefix = {}, f"{flushed.detail}; "
        result = await self._apply(job, state)
        if prefix:
            # the closed shift is recorded: whatever this job did, it must not be sent again
            result = dataclasses.replace(
                result,
                detail=short(prefix + result.detail),
                state={} if result.state is None else result.state,
            )
        return result

    async def _apply(self, job: Job, state: Mapping[str, Any]) -> Result:
        try:
            plan = plan_job(state, job, max_shift=self._max_shift)
        except ShiftStateError as err:
            return Result.held(f"saved TimeTrack state unreadable ({err}); reset it to {{}}")
        if plan.result is not None:
            return plan.result
        if plan.find_repeat_out:
            return await self._repeat_out(job)
        if plan.attendance is None:  # a Plan holds a result, an attendance, or a search
            msg = f"empty plan for delivery {job.delivery_id}"
            raise RuntimeError(msg)
        return await self._record(
            plan.attendance, state, after=plan.after, done=plan.done, attempt=job.attempt
        )

    # -- create, searching first when an earlier create may have landed ------------------------

    async def _record(
        self,
        attendance: Attendance,
        state: Mapping[str, Any],
        *,
        after: dict[str, Any],
        done: str,
        attempt: int,
    ) -> Result:
        _, unverified = read_state(state)
        # attempt > 1: an earlier attempt may have created it although its answer was never
        # saved (the bridge was killed or stopped while waiting): search before creating.
        if unverified or attempt > 1:
            found = await self._search(
                attendance.username,
                attendance.start,
                attendance.end,
                lambda entries: find_same_start(entries, attendance, **self._match_args()),
                attempt=attempt,
            )
            if isinstance(found, Result):
                return found
            if found is not None:
                return Result.duplicate(
                    short(
                        f"TimeTrack already holds it (id {found.get('id', '?')}, "
                        f"{attendance.describe()})"
                    ),
                    state=after,
                )
        body = build_attendance_body(
            attendance,
            fields=self._config.fields,
            mode=self._config.timestamps,
            site_tz=self._site_tz,
        )
        answer = await self._request("POST", self._url, json=body)
        if isinstance(answer, ExchangeError):
            if answer.never_connected:
                return Result.retry(str(answer), unreachable=True)  # nothing sent
            return Result.retry(
                short(f"{answer}; search before creating again"),
                state={**state, "unverified": True},
                unreachable=answer.unreachable,
            )
        result = classify_timetrack_reply(answer.status, answer.body, answer.retry_after)
        if result.outcome is Outcome.DELIVERED:
            created = parse_json(answer.body)
            ident = created.get("id") if isinstance(created, dict) else None
            suffix = f", id {ident}" if ident is not None else ""
            return Result.delivered(short(f"{done}{suffix}"), state=after)
        if result.outcome is Outcome.RETRY_LATER and answer.status >= 500:
            # a 5xx (a 504 from a proxy) may come after the entry was stored
            return dataclasses.replace(result, state={**state, "unverified": True})
        if result.outcome is Outcome.PERMANENT_FAILURE:
            # the attendance as built is refused: keeping the shift would only poison the
            # person's next shifts; the dead delivery keeps the interval and the reason
            detail = short(f"{result.detail} [{attendance.describe()}]")
            return Result.dead(detail, state={})
        return result

    async def _repeat_out(self, job: Job) -> Result:
        """An `out` with no open shift: a resent `out` (TimeTrack holds an attendance ending
        then) is a duplicate; anything else is held, nothing guessed."""
        found = await self._search(
            job.person,
            job.time - self._max_shift,
            job.time,
            lambda entries: find_recent_end(
                entries, username=job.person, at=job.time, **self._match_args()
            ),
            attempt=job.attempt,
        )
        if isinstance(found, Result):
            return found
        if found is not None:
            return Result.duplicate(
                short(
                    f"no open shift; TimeTrack already holds the attendance ending "
                    f"{found.get(self._config.fields.to, found.get('to', '?'))} "
                    f"(id {found.get('id', '?')})"
                )
            )
        return Result.held(
            f"out at {show_time(job.time)} with no open shift (a missed in?); nothing sent: "
            f"start_shift, then requeue, or drop"
        )

    def _match_args(self) -> dict[str, Any]:
        return {
            "fields": self._config.fields,
            "mode": self._config.timestamps,
            "site_tz": self._site_tz,
        }

    async def _search(
        self, username: str, start: datetime, end: datetime, match: Matcher, *, attempt: int
    ) -> Mapping[str, Any] | Result | None:
        """Page through the person's attendances around [start, end]; the first match, None,
        or a Result (retry/paused) when the search could not be completed: an answer that
        cannot be read retries, and from attempt UNREADABLE_HOLD_ATTEMPT on holds."""
        mode, zone = self._config.timestamps, self._site_tz
        params = {
            "username": username,
            "user": username,  # the docs' table says user, their example username
            "from": format_timestamp(start - SEARCH_MARGIN, mode=mode, site_tz=zone),
            "to": format_timestamp(end + SEARCH_MARGIN, mode=mode, site_tz=zone),
            "limit": str(SEARCH_LIMIT),
        }
        for page in range(SEARCH_MAX_PAGES):
            answer = await self._request(
                "GET", self._url, params={**params, "page_number": str(page)}
            )
            if isinstance(answer, ExchangeError):
                return Result.retry(short(f"search: {answer}"), unreachable=answer.unreachable)
            result = classify_timetrack_reply(answer.status, answer.body, answer.retry_after)
            if result.outcome is not Outcome.DELIVERED:
                if result.outcome is Outcome.PERMANENT_FAILURE:
                    # cannot tell whether it exists: never create blindly, never drop it
                    return Result.retry(short(f"search failed: {result.detail}"))
                return dataclasses.replace(result, detail=short(f"search: {result.detail}"))
            entries = entries_of(answer.body)
            if entries is None:
                return _unreadable(answer.body, "not a list of attendances", attempt)
            try:
                found = match(entries)
            except SearchReplyError as err:
                return _unreadable(answer.body, str(err), attempt)
            if found is not None:
                return found
            if len(entries) < SEARCH_LIMIT:
                return None
        return Result.retry(f"search inconclusive after {SEARCH_MAX_PAGES} pages")

    # -- HTTP ----------------------------------------------------------------------------------

    async def _request(self, method: str, url: str, **kwargs: Any) -> _Answer | ExchangeError:
        try:
            reply = await exchange(
                self._session,
                method,
                url,
                headers={**auth_headers(self._key, self._secret), "Accept": "application/json"},
                timeout=self._config.timeout_seconds,
                secrets=[self._key, self._secret],
                **kwargs,
            )
        except ExchangeError as err:
            # CancelledError is a BaseException and passes through untouched
            return err
        # masked once decoded and before anything is excerpted: no form or part of an echoed
        # secret survives a cut
        return _Answer(reply.status, reply.masked_body(), reply.retry_after)

    def _redact(self, text: str) -> str:
        return short(mask_secrets(text, [self._key, self._secret]), DETAIL_MAX)


def _unreadable(body: bytes, why: str, attempt: int) -> Result:
    """A search answer the bridge cannot interpret (`body` is masked): retried, then held."""
    detail = short(f"search: unreadable answer ({why}): {excerpt(body)}")
    if attempt >= UNREADABLE_HOLD_ATTEMPT:
        return Result.held(f"{detail}; held after {attempt} attempts, nothing created")
    return Result.retry(detail)
