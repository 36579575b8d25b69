"""A fake McTime: an aiohttp.web app keeping clocks and time entries like the real service.

Built from the seed mctime-post-clock.txt and vendor-apis/FACTS.md. Per user there is at most
one clock: none, running (from), or on a break (the last break has no `to`). `break` toggles.
A `stop` turns the clock into a time entry; a new entry overlapping an existing one of the same
user replaces it and the answer is 201 (the docs: "time entry was overwritten").

Assumptions where the docs show nothing (the sink's reader accepts these shapes):
- Error texts: start while running -> 400 "User already has a running clock"; break, stop,
  cancel or update without a clock -> 404 "No running clock".
- GET /clock?page=N (pages from 1, 20 clocks each) lists running clocks, each
  {"userId", "from", "onBreak": bool, "breaks": [{"from","to"}], "timeType", "comment",
  "organizationId", "organizationName"}. The real shape is undocumented, so `clock_shape`
  switches between the two plausible ones: "item" (one {"message", "data": clock} item per
  clock) and "list" (one {"message", "data": [clocks]} item); `clock_user_field` names the user
  as "userId", "user_id" or "user.id"; `clock_body` (bytes) replaces every 200 answer with
  something unreadable.
- GET /users?page=N (pages from 1, 20 per page): {"data": {"id", "name", ...}} items; users
  added with add_user() carry their extra fields too (employeeNumber, email: made up, the docs
  only say the list has filters).
- GET /times?from=..&to=.. lists entries overlapping the range (offsets required, <= 366 days).
- Every request, answered or not (a 429 too), counts toward the limit of 10 requests in any
  sliding 1 s window, by its arrival time (taken before anything is awaited); above it the
  answer is 429 "Too many requests" with Retry-After: 1.

Switches are plain attributes a test flips; counters ("next N requests") count down.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from bridge.vendors.serving import serving

PAGE_SIZE = 20
RATE_LIMIT = 10  # requests in any 1 s window
TIME_TYPES = frozenset(
    [
        "work",
        "parental_leave",
        "worked_rest_period",
        "clocking",
        "statutory_leave",
        "public_holiday_abroad",
        "medical_leave",
        "bad_weather",
        "company_vacation",
        "unpaid_vacation",
        "care_leave",
        "out_office",
        "work_accident_sickness",
        "military_exercize",
        "flextime",
        "unpaid_time_off",
        "home_office",
        "study_leave",
        "paid_time_off",
        "other_leave",
        "vacation_abroad",
        "travel",
        "sick",
        "military_service",
        "jubilee_day",
        "vacation",
        "move",
        "special_leave",
        "free_time",
    ]
)
ACTIONS = frozenset({"start", "break", "stop", "cancel", "update"})

ALREADY_RUNNING = "User already has a running clock"
NO_CLOCK = "No running clock"
OVERWRITTEN = "Success, but an existing time entry was overwritten"


def reply(status: int, *items: dict[str, Any], valid: bool | None = None) -> web.Response:
    body = {"items": list(items), "valid": status < 400 if valid is None else valid}
    return web.json_response(body, status=status)


def error(status: int, message: str) -> web.Response:
    return reply(status, {"message": message})


def _parse_time(text: object) -> datetime | None:
    """ISO-8601 with an offset, as the docs require; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


class FakeMcTime:
    """The service's state (clocks, entries, users) plus the switches tests look at."""

    def __init__(self, api_key: str = "fake-mctime-api-key") -> None:
        self.api_key = api_key
        self.clocks: dict[str, dict[str, Any]] = {}  # userId -> running clock
        self.entries: list[dict[str, Any]] = []  # saved time entries
        self.users: dict[str, str] = {}  # userId -> name; users are also added on first clock
        self.user_fields: dict[str, dict[str, Any]] = {}  # userId -> extra fields of the listing
        self.unknown_users: set[str] = set()  # POST /clock for these: 404 "User not found"
        self.requests: list[dict[str, Any]] = []  # method, path, query, body, time, answer
        # fault switches
        self.fail_503 = 0  # next N requests: 503, nothing applied
        self.fail_504 = 0  # next N requests: applied, then 504 (the answer took too long)
        self.delay_seconds = 0.0  # before a request is applied and answered
        # A vendor that quotes the key back: when set, every request is answered with
        # HTTP echo_status and the body echo_key makes of the API_KEY header it carried.
        self.echo_key: Callable[[str], str] | None = None
        self.echo_status = 200
        self.lose_answers = 0  # next N POSTs: applied, then the connection is dropped
        self.lose_requests = 0  # next N POSTs: the connection is dropped, nothing applied
        self.clock_shape = "item"  # GET /clock: "item" (one per clock) or "list" (one item)
        self.clock_user_field = "userId"  # or "user_id", "user.id"
        self.clock_body: bytes | None = None  # GET /clock answers 200 with this body
        self.rate_limit = RATE_LIMIT
        self.retry_after_seconds = 1
        self._arrivals: deque[float] = deque()
        self._changed = asyncio.Condition()

    # -- what tests look at ------------------------------------------------------------------

    def posts(self, action: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests
            if r["method"] == "POST"
            and (action is None or (r["body"] or {}).get("action") == action)
        ]

    def gets(self, path: str = "/clock") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "GET" and r["path"] == path]

    def max_requests_in_any_second(self) -> int:
        """The most requests that arrived within any 1-second window (half-open)."""
        times = sorted(r["time"] for r in self.requests)
        return max(
            (bisect.bisect_left(times, start + 1.0) - i for i, start in enumerate(times)),
            default=0,
        )

    def add_user(self, user_id: str, name: str, **fields: Any) -> None:
        """A user the listing shows, with extra fields (employeeNumber=..., email=...)."""
        self.users[user_id] = name
        self.user_fields[user_id] = dict(fields)

    def clock_state(self, user: str) -> str:
        clock = self.clocks.get(user)
        if clock is None:
            return "off"
        return "on_break" if _open_break(clock) is not None else "running"

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self._wait_until(lambda: len(self.requests) >= n, timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self._wait_until(predicate, timeout)

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- every request -----------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        now = time.monotonic()  # the arrival, counted before anything else can run
        while self._arrivals and self._arrivals[0] <= now - 1.0:
            self._arrivals.popleft()
        self._arrivals.append(now)
        recent = len(self._arrivals)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        record: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "body": body,
            "time": now,
            "answer": None,
        }
        self.requests.append(record)
        await self._notify()
        if self.echo_key is not None:
            record["answer"] = "echo"
            text = self.echo_key(request.headers.get("API_KEY", ""))
            return web.Response(status=self.echo_status, text=text, content_type="application/json")
        if self.lose_requests > 0 and request.method == "POST":
            self.lose_requests -= 1
            record["answer"] = "lost before applied"
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)
        response = await self._answer(request, handler, record, recent)
        if self.lose_answers > 0 and request.method == "POST":
            # the work is done but the answer never reaches the client
            self.lose_answers -= 1
            record["answer"] = f"lost:{record['answer']}"
            if request.transport is not None:
                request.transport.close()
        await self._notify()
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Any],
        record: dict[str, Any],
        recent: int,
    ) -> web.StreamResponse:
        if recent > self.rate_limit:
            record["answer"] = 429
            headers = {"Retry-After": str(self.retry_after_seconds)}
            return web.json_response(
                {"items": [{"message": "Too many requests"}], "valid": False},
                status=429,
                headers=headers,
            )
        if self.fail_503 > 0:
            self.fail_503 -= 1
            record["answer"] = 503
            return web.Response(status=503, text="Service Unavailable")
        if request.headers.get("API_KEY") != self.api_key:
            record["answer"] = 401
            return error(401, "Unauthorized")
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        response: web.Response = await handler(request)
        record["answer"] = response.status
        if self.fail_504 > 0:
            self.fail_504 -= 1
            record["answer"] = f"504 after {response.status}"
            return web.Response(status=504, text="Gateway Timeout")
        return response

    # -- POST /clock -------------------------------------------------------------------------

    async def post_clock(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error(400, "Body must be JSON")
        if not isinstance(body, dict):
            return error(400, "Body must be a JSON object")
        action, user = body.get("action"), body.get("userId")
        if action not in ACTIONS:
            return error(400, f"Invalid action {action!r}")
        if not isinstance(user, str) or not user:
            return error(400, "userId is required")  # the fake has no authenticated user
        if user in self.unknown_users:
            return error(404, "User not found")
        self.users.setdefault(user, f"User {user}")
        at = _parse_time(body.get("dateTime"))
        if action in ("start", "break", "stop") and at is None:
            return error(400, "dateTime must be ISO-8601 with a timezone")
        clock = self.clocks.get(user)
        if action == "start":
            return self._start(user, body, at)  # type: ignore[arg-type]
        if clock is None:
            return error(404, NO_CLOCK)
        if action == "break":
            if (open_break := _open_break(clock)) is not None:
                open_break["to"] = at
            else:
                clock["breaks"].append({"from": at, "to": None})
            return reply(200, {"message": "Success", "data": _clock_data(user, clock)})
        if action == "stop":
            return self._stop(user, clock, at)  # type: ignore[arg-type]
        if action == "cancel":
            del self.clocks[user]
            return reply(200, {"message": "Success"})
        problem = _organization_problem(body) or _time_type_problem(body, required=False)
        if problem:
            return error(400, problem)
        clock.update({k: v for k, v in _clock_fields(body).items() if v is not None})
        return reply(200, {"message": "Success", "data": _clock_data(user, clock)})

    def _start(self, user: str, body: dict[str, Any], at: datetime) -> web.Response:
        if user in self.clocks:
            return error(400, ALREADY_RUNNING)
        problem = _organization_problem(body) or _time_type_problem(body, required=True)
        if problem:
            return error(400, problem)
        clock = {"from": at, "breaks": [], **_clock_fields(body)}
        self.clocks[user] = clock
        return reply(200, {"message": "Success", "data": _clock_data(user, clock)})

    def _stop(self, user: str, clock: dict[str, Any], at: datetime) -> web.Response:
        if at < clock["from"]:
            return error(400, "dateTime is before the start of the clock")
        if (open_break := _open_break(clock)) is not None:
            open_break["to"] = at
        del self.clocks[user]
        entry = {
            "id": str(uuid.uuid4()),
            "from": clock["from"],
            "to": at,
            "breaks": [dict(b, id=str(uuid.uuid4()), automatic=False) for b in clock["breaks"]],
            "comment": clock.get("comment"),
            "type": clock.get("timeType") or "work",
            "organizationId": clock.get("organizationId"),
            "organizationName": clock.get("organizationName"),
            "userId": user,
            "category": "productive",
            "creationType": "clock",
        }
        overlapping = [
            e
            for e in self.entries
            if e["userId"] == user and e["from"] < entry["to"] and entry["from"] < e["to"]
        ]
        for old in overlapping:
            self.entries.remove(old)
        self.entries.append(entry)
        if overlapping:
            return reply(201, {"message": OVERWRITTEN, "data": _entry_data(entry)})
        return reply(200, {"message": "Success", "data": _entry_data(entry)})

    # -- GET /clock, /users, /times ----------------------------------------------------------

    async def get_clock(self, request: web.Request) -> web.Response:
        page = _page(request)
        if page is None:
            return error(400, "page must be a number from 1")
        if self.clock_body is not None:
            return web.Response(status=200, body=self.clock_body, content_type="application/json")
        users = sorted(self.clocks)[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        clocks = [self._named(u, _clock_data(u, self.clocks[u])) for u in users]
        if self.clock_shape == "list":
            return reply(200, {"message": "Success", "data": clocks})
        return reply(200, *({"message": "Success", "data": c} for c in clocks))

    def _named(self, user: str, data: dict[str, Any]) -> dict[str, Any]:
        """The clock with its user named in the spelling `clock_user_field` says."""
        if self.clock_user_field == "userId":
            return data
        del data["userId"]
        if self.clock_user_field == "user.id":
            return {"user": {"id": user}, **data}
        return {self.clock_user_field: user, **data}

    async def get_users(self, request: web.Request) -> web.Response:
        page = _page(request)
        if page is None:
            return error(400, "page must be a number from 1")
        users = sorted(self.users)[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        items = [
            {
                "message": "Success",
                "data": {"id": u, "name": self.users[u], **self.user_fields.get(u, {})},
            }
            for u in users
        ]
        return reply(200, *items)

    async def get_times(self, request: web.Request) -> web.Response:
        start = _parse_time(request.query.get("from"))
        end = _parse_time(request.query.get("to"))
        if start is None or end is None:
            return error(400, "from and to must be ISO-8601 with a timezone")
        if end < start or end - start > timedelta(days=366):
            return error(400, "from and to must be at most 366 days apart")
        user = request.query.get("userId")
        items = [
            {"message": "Success", "data": _entry_data(e)}
            for e in self.entries
            if e["from"] < end and start < e["to"] and (user is None or e["userId"] == user)
        ]
        return reply(200, *items)


def _open_break(clock: dict[str, Any]) -> dict[str, Any] | None:
    breaks = clock["breaks"]
    return breaks[-1] if breaks and breaks[-1]["to"] is None else None


def _clock_fields(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("organization")
    org: dict[str, Any] = given if isinstance(given, dict) else {}
    return {
        "timeType": body.get("timeType"),
        "comment": body.get("comment"),
        "organizationId": body.get("organizationId") or org.get("id"),
        "organizationName": body.get("organizationName") or org.get("name"),
    }


def _organization_problem(body: dict[str, Any]) -> str | None:
    org = body.get("organization")
    if org is not None and not (isinstance(org, dict) and ({"id", "name"} & set(org))):
        return "organization must be {id} or {name}"
    return None


def _time_type_problem(body: dict[str, Any], *, required: bool) -> str | None:
    kind = body.get("timeType")
    if kind is None and not required:
        return None
    if kind is not None and kind not in TIME_TYPES:
        return f"Invalid timeType {kind!r}"
    return None


def _clock_data(user: str, clock: dict[str, Any]) -> dict[str, Any]:
    return {
        "userId": user,
        "from": _iso(clock["from"]),
        "onBreak": _open_break(clock) is not None,
        "breaks": [{"from": _iso(b["from"]), "to": _iso(b["to"])} for b in clock["breaks"]],
        "timeType": clock.get("timeType") or "work",
        "comment": clock.get("comment"),
        "organizationId": clock.get("organizationId"),
        "organizationName": clock.get("organizationName"),
    }


def _entry_data(entry: dict[str, Any]) -> dict[str, Any]:
    data = dict(entry, **{"from": _iso(entry["from"]), "to": _iso(entry["to"])})
    data["breaks"] = [
        dict(b, **{"from": _iso(b["from"]), "to": _iso(b["to"])}) for b in entry["breaks"]
    ]
    return data


def _page(request: web.Request) -> int | None:
    text = request.query.get("page", "1")
    return int(text) if text.isdigit() and int(text) >= 1 else None


def make_app(fake: FakeMcTime) -> web.Application:
    app = web.Application(middlewares=[fake.middleware])
    app.router.add_post("/clock", fake.post_clock)
    app.router.add_get("/clock", fake.get_clock)
    app.router.add_get("/users", fake.get_users)
    app.router.add_get("/times", fake.get_times)
    return app


@asynccontextmanager
async def running_fake_mctime(
    fake: FakeMcTime, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the fake on host:port (0: a free port) and yield its base URL."""
    async with serving(make_app(fake), host, port) as url:
        yield f"{url}"
