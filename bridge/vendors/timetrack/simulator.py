"""A fake TimeTrack Enterprise: an aiohttp.web app keeping attendances and users like the vendor.

From the seed timetrack-attendances-api.txt and FACTS.md: /api/v2/ext/attendances (list with
`user` or `username`, from/to, page_number from 0, limit <= 1000 default 50; get, create, update,
delete-marks-deleted) and /api/v2/ext/users (list, `?username=`). Errors are
`{"errors":[{"title","status","code","detail"}]}`; 15020 "TimeEntry exist but it is deleted" is
documented, the other codes here are made up (marked).

Undocumented, so chosen here: the list answer is a bare JSON array (set `list_envelope` to wrap
it in an object under that key); the from/to filter keeps entries that *start* within
[from, to]; deleted entries are not listed; unknown body fields are ignored, as many APIs do,
and counted in `ignored_fields` (set `strict_fields` to refuse them with a 400).

Switches are plain attributes a test flips; counters ("next N requests") count down.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from aiohttp import web

from bridge.vendors.serving import serving

API = "/api/v2/ext"
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_QUERY_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{3})?Z?")
DEFAULT_FIELDS = {
    "username": "username",
    "from": "from",
    "to": "to",
    "break_minutes": "breakMinutes",
    "notes": "notes",
}
EXAMPLE_FIELDS = {**DEFAULT_FIELDS, "break_minutes": "minutesBreak", "notes": "details"}
LIMIT_MAX = 1000
LIMIT_DEFAULT = 50
CODE_DELETED = 15020  # documented: "TimeEntry exist but it is deleted"
CODE_NOT_FOUND = 15010  # made up
CODE_VALIDATION = 10001  # made up
CODE_AUTH = 10401  # made up


def error_body(status: int, title: str, detail: str, code: int) -> dict[str, Any]:
    return {"errors": [{"title": title, "status": status, "code": code, "detail": detail}]}


def _error(status: int, title: str, detail: str, code: int) -> web.Response:
    return web.json_response(error_body(status, title, detail, code), status=status)


def _bad_request(detail: str) -> web.Response:
    return _error(400, "Bad Request", detail, CODE_VALIDATION)


def _parse_stamp(value: str, pattern: re.Pattern[str]) -> datetime | None:
    if not pattern.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.rstrip("Z")[:19])
    except ValueError:
        return None


class FakeTimeTrack:
    """The vendor's state (attendances, users) plus the switches and counters tests look at."""

    def __init__(
        self, api_key: str = "fake-timetrack-key", api_secret: str = "fake-timetrack-secret"
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.attendances: list[dict[str, Any]] = []  # includes deleted ones ("deleted": True)
        self.users: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # method, path, query, body, answer
        self.ignored_fields: list[str] = []
        # which body names the "account" understands (the docs' table by default)
        self.fields: dict[str, str] = dict(DEFAULT_FIELDS)
        self.strict_fields = False
        self.known_users: set[str] | None = None  # None: any username is accepted
        self.list_envelope: str | None = None
        # fault switches
        self.fail_5xx = 0
        self.fail_status = 503
        self.rate_limited = 0
        self.retry_after_seconds = 1
        self.delay_seconds = 0.0
        # A vendor that quotes the key back: when set, every request is answered with
        # HTTP echo_status and the body echo_key makes of the X-TimeTrack-Api-Secret it carried.
        self.echo_key: Callable[[str], str] | None = None
        self.echo_status = 200
        self.lose_answers = 0  # creates: store it, then drop the connection unanswered
        self.list_body: bytes | None = None  # listing answers 200 with this body instead
        self._changed = asyncio.Condition()

    # -- for tests -------------------------------------------------------------------------

    def live(self) -> list[dict[str, Any]]:
        """The attendances not deleted."""
        return [a for a in self.attendances if not a.get("deleted")]

    def add_user(self, username: str, **extra: Any) -> dict[str, Any]:
        user = {"id": len(self.users) + 1, "username": username, **extra}
        self.users.append(user)
        return user

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self._wait_until(lambda: len(self.requests) >= n, timeout)

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the middleware every request passes ------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        raw = await request.read()
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "body": raw.decode("utf-8", errors="replace"),
            "answer": None,
        }
        self.requests.append(entry)
        await self._notify()
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        if self.echo_key is not None:
            entry["answer"] = "echo"
            text = self.echo_key(request.headers.get("X-TimeTrack-Api-Secret", ""))
            return web.Response(status=self.echo_status, text=text, content_type="application/json")
        if self.fail_5xx > 0:
            self.fail_5xx -= 1
            entry["answer"] = self.fail_status
            return web.Response(status=self.fail_status, text="Service Unavailable")
        if self.rate_limited > 0:
            self.rate_limited -= 1
            entry["answer"] = 429
            headers = {"Retry-After": str(self.retry_after_seconds)}
            return web.Response(status=429, text="Too Many Requests", headers=headers)
        if (
            request.headers.get("X-TimeTrack-Api-Key") != self.api_key
            or request.headers.get("X-TimeTrack-Api-Secret") != self.api_secret
        ):
            entry["answer"] = 401
            return _error(401, "Unauthorized", "Invalid API key or secret", CODE_AUTH)
        response: web.StreamResponse = await handler(request)
        entry["answer"] = response.status
        if request.method == "POST" and self.lose_answers > 0 and response.status < 300:
            self.lose_answers -= 1
            entry["answer"] = f"lost:{response.status}"
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)
        return response

    # -- attendances ------------------------------------------------------------------------

    def _public(self, record: dict[str, Any]) -> dict[str, Any]:
        # the docs' object table: user, from, to, notes, manual, workedMinutes, breakMinutes
        return {k: v for k, v in record.items() if k != "deleted"}

    def _read_fields(
        self, body: dict[str, Any], *, creating: bool
    ) -> dict[str, Any] | web.Response:
        names = self.fields
        known = set(names.values())
        for key in body:
            if key not in known:
                if self.strict_fields:
                    return _bad_request(f"Unknown field {key}")
                self.ignored_fields.append(key)
        values: dict[str, Any] = {}
        if creating:
            username = body.get(names["username"])
            if not isinstance(username, str) or not username:
                return _bad_request(f"{names['username']} is required")
            if self.known_users is not None and username not in self.known_users:
                return _bad_request(f"User {username} does not exist")
            values["user"] = username
        for name in ("from", "to"):
            value = body.get(names[name])
            if value is None:
                if creating:
                    return _bad_request(f"{names[name]} is required")
                continue
            if not isinstance(value, str) or _parse_stamp(value, _STAMP) is None:
                return _bad_request(
                    f"{names[name]} must be in format YYYY-MM-DDTHH:MM:SS.fffZ, got {value!r}"
                )
            values[name] = value
        minutes = body.get(names["break_minutes"])
        if minutes is not None:
            if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 0:
                return _bad_request(f"{names['break_minutes']} must be a whole number")
            values["breakMinutes"] = minutes
        notes = body.get(names["notes"])
        if notes is not None:
            values["notes"] = str(notes)
        return values

    @staticmethod
    def _worked(record: dict[str, Any]) -> int:
        # both were validated on the way in
        start = datetime.fromisoformat(record["from"][:19])
        end = datetime.fromisoformat(record["to"][:19])
        break_minutes: int = record.get("breakMinutes", 0)
        return int((end - start).total_seconds() // 60) - break_minutes

    async def create(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body is None:
            return _bad_request("Body must be a JSON object")
        values = self._read_fields(body, creating=True)
        if isinstance(values, web.Response):
            return values
        if values["to"] <= values["from"]:
            return _bad_request("to must be after from")
        record = {
            "id": len(self.attendances) + 1,
            "user": values["user"],
            "from": values["from"],
            "to": values["to"],
            "notes": values.get("notes", ""),
            "manual": True,
            "breakMinutes": values.get("breakMinutes", 0),
        }
        record["workedMinutes"] = self._worked(record)
        self.attendances.append(record)
        await self._notify()
        return web.json_response(self._public(record), status=201)

    async def list_attendances(self, request: web.Request) -> web.Response:
        query = request.query
        page = _int(query.get("page_number", "0"))
        limit = _int(query.get("limit", str(LIMIT_DEFAULT)))
        if page is None or page < 0:
            return _bad_request("page_number must be a whole number from 0")
        if limit is None or not 1 <= limit <= LIMIT_MAX:
            return _bad_request(f"limit must be between 1 and {LIMIT_MAX}")
        bounds = {}
        for name in ("from", "to"):
            if name in query:
                parsed = _parse_stamp(query[name], _QUERY_STAMP)
                if parsed is None:
                    return _bad_request(f"{name} must be in format YYYY-MM-DDTHH:MM:SS.fffZ")
                bounds[name] = parsed
        user = query.get("username") or query.get("user")
        rows = []
        for record in self.live():
            start = datetime.fromisoformat(record["from"][:19])
            if user is not None and record["user"] != user:
                continue
            if "from" in bounds and start < bounds["from"]:
                continue
            if "to" in bounds and start > bounds["to"]:
                continue
            rows.append(self._public(record))
        return self._page(rows[page * limit : (page + 1) * limit])

    def _page(self, rows: list[dict[str, Any]]) -> web.Response:
        if self.list_body is not None:
            return web.Response(body=self.list_body, content_type="application/json")
        if self.list_envelope is None:
            return web.json_response(rows)
        return web.json_response({self.list_envelope: rows})

    def _find(self, request: web.Request) -> dict[str, Any] | web.Response:
        ident = _int(request.match_info["id"])
        record = next((a for a in self.attendances if a["id"] == ident), None)
        if record is None:
            return _error(404, "Not Found", "TimeEntry not found", CODE_NOT_FOUND)
        if record.get("deleted"):
            return _error(404, "Not Found", "TimeEntry exist but it is deleted", CODE_DELETED)
        return record

    async def get(self, request: web.Request) -> web.Response:
        record = self._find(request)
        if isinstance(record, web.Response):
            return record
        return web.json_response(self._public(record))

    async def update(self, request: web.Request) -> web.Response:
        record = self._find(request)
        if isinstance(record, web.Response):
            return record
        body = await _json_object(request)
        if body is None:
            return _bad_request("Body must be a JSON object")
        if self.fields["username"] in body:
            return _bad_request(f"{self.fields['username']} cannot be updated")
        values = self._read_fields(body, creating=False)
        if isinstance(values, web.Response):
            return values
        updated = {**record, **values}
        if updated["to"] <= updated["from"]:
            return _bad_request("to must be after from")
        updated["workedMinutes"] = self._worked(updated)
        record.update(updated)
        return web.json_response(self._public(record))

    async def delete(self, request: web.Request) -> web.Response:
        record = self._find(request)
        if isinstance(record, web.Response):
            return record
        record["deleted"] = True
        return web.json_response(self._public(record))

    # -- users ------------------------------------------------------------------------------

    async def list_users(self, request: web.Request) -> web.Response:
        page = _int(request.query.get("page_number", "0"))
        limit = _int(request.query.get("limit", str(LIMIT_DEFAULT)))
        if page is None or page < 0 or limit is None or not 1 <= limit <= LIMIT_MAX:
            return _bad_request(f"page_number >= 0 and 1 <= limit <= {LIMIT_MAX}")
        wanted = request.query.get("username")
        rows = [u for u in self.users if wanted is None or u["username"] == wanted]
        return self._page(rows[page * limit : (page + 1) * limit])


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def make_app(fake: FakeTimeTrack) -> web.Application:
    app = web.Application(middlewares=[fake.middleware])
    for path in (f"{API}/attendances", f"{API}/attendances/"):
        app.router.add_get(path, fake.list_attendances)
        app.router.add_post(path, fake.create)
    app.router.add_get(f"{API}/attendances/{{id}}", fake.get)
    app.router.add_put(f"{API}/attendances/{{id}}", fake.update)
    app.router.add_delete(f"{API}/attendances/{{id}}", fake.delete)
    for path in (f"{API}/users", f"{API}/users/"):
        app.router.add_get(path, fake.list_users)  # users carry add_user()'s extra fields
    return app


@asynccontextmanager
async def running_fake_timetrack(
    fake: FakeTimeTrack, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the fake on host:port (0: a free port) and yield its base URL."""
    async with serving(make_app(fake), host, port) as url:
        yield f"{url}"
