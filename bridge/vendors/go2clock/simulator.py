"""A fake Go2Clock cloud: an aiohttp.web app answering as the vendor's help articles say.

Bodies are copied from the seeds go2clock-7-upload-punches.txt (PUT /api/punches/) and
go2clock-6-download-punches.txt (POST /api/punches/, POST /api/punches_range/), and the
employee lists FACTS.md names: POST /api/users/ (userid, pwd, idcard, deptname) and POST
/api/employees/ (fuller details; the fields beyond userid, idcard and deptname are made up
here: name, email). Their answer shape is not shown anywhere; the fake uses the downloads'
{"status": "success", "message": [...], "error": ""}. Every answer
is HTTP 200 with the verdict in the JSON body, except the fault switches, which model what sits
in front of the vendor (a 503 from a proxy, a 429, a slow or dropped connection).

Switches are plain attributes a test flips; counters ("next N requests") count down.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.vendors.serving import serving

INVALID_KEY = {"status": False, "error": "Invalid API key "}
ALREADY_EXISTS = {
    "status": "failure",
    "message": "",
    "error": {"userid": "The record already exists on the cloud server."},
}
UNEXPECTED_ERROR = {
    "status": "failure",
    "message": "",
    "error": "An unexpected error trying to create the record on the cloud server",
}
SUCCESS = {"status": "success", "message": "", "error": "Success created."}

_CHECKTIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INTEGER = re.compile(r"-?\d+")


def validation_error(description: str) -> dict[str, Any]:
    return {"status": "failure", "message": "Validation Error", "error": description}


class FakeGo2Clock:
    """The vendor's state (stored punches) plus the switches and counters tests look at."""

    def __init__(self, api_key: str = "fake-go2clock-api-key") -> None:
        self.api_key = api_key
        self.records: list[dict[str, Any]] = []  # stored punches: form fields + id, received_at
        self.requests: list[dict[str, Any]] = []  # every PUT: form, answer kind, received_at
        self.created_count = 0
        self.duplicate_answers = 0
        # fault switches
        self.fail_5xx = 0
        # A flaky load balancer: this share of PUTs (0..1, drawn at random) is answered HTTP 500.
        self.fail_500_share = 0.0
        self._dice = random.Random(15)  # noqa: S311 - fault injection, not cryptography
        self.unexpected_errors = 0
        self.rate_limited = 0
        self.retry_after_seconds = 1
        self.delay_seconds = 0.0
        self.lose_answers = 0
        self.invalid_userids: set[str] = set()
        self.invalid_key_http_status = 200
        # A vendor that quotes the key back: when set, every request is answered with
        # HTTP echo_status and the body echo_key makes of the APIKEY it carried.
        self.echo_key: Callable[[str], str] | None = None
        self.echo_status = 200
        # employees: userid, pwd, idcard, deptname, name, email
        self.users: list[dict[str, Any]] = []
        self.user_requests: list[str] = []  # the paths of the employee-list requests
        self.users_fail_5xx = 0  # next N employee-list requests: 503
        self._changed = asyncio.Condition()

    def add_user(
        self, userid: int | str, idcard: str, name: str = "", **extra: Any
    ) -> dict[str, Any]:
        """An employee; `idcard` is the badge number."""
        user = {
            "userid": userid,
            "pwd": "1234",  # the vendor lists the kiosk PIN: a client must never keep it
            "idcard": idcard,
            "deptname": extra.pop("deptname", "Staff"),
            "name": name,
            "email": extra.pop("email", ""),
            **extra,
        }
        self.users.append(user)
        return user

    def punches_by_key(self) -> Counter[tuple[str, str]]:
        """How often each (userid, checktime) is stored: every value is 1 when exactly-once."""
        return Counter((r["userid"], r["checktime"]) for r in self.records)

    # ASYNC109 prefers asyncio.timeout() at the call site; a timeout argument reads better in tests
    async def wait_for_records(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Wait until at least n punches are stored; raises TimeoutError after timeout seconds."""
        await self._wait_until(lambda: len(self.records) >= n, timeout)
        return list(self.records)

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until at least n PUTs have arrived (answered or not)."""
        await self._wait_until(lambda: len(self.requests) >= n, timeout)

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- PUT /api/punches/ -------------------------------------------------------------------

    async def put_punch(self, request: web.Request) -> web.StreamResponse:
        form = {key: str(value) for key, value in (await request.post()).items()}
        entry: dict[str, Any] = {"form": form, "answer": None, "received_at": time.monotonic()}
        self.requests.append(entry)
        await self._notify()
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        kind, response = await self._answer_upload(form, request.headers.get("APIKEY"))
        if self.lose_answers > 0:
            # the work is done (a record may be stored) but the answer never reaches the client
            self.lose_answers -= 1
            entry["answer"] = f"lost:{kind}"
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)
        entry["answer"] = kind
        return response

    async def _answer_upload(
        self, form: dict[str, str], api_key: str | None
    ) -> tuple[str, web.Response]:
        if self.fail_5xx > 0:
            self.fail_5xx -= 1
            return "http_503", web.Response(status=503, text="Service Unavailable")
        if self.fail_500_share and self._dice.random() < self.fail_500_share:
            return "http_500", web.Response(status=500, text="Internal Server Error")
        if self.rate_limited > 0:
            self.rate_limited -= 1
            headers = {"Retry-After": str(self.retry_after_seconds)}
            return "http_429", web.Response(status=429, text="Too Many Requests", headers=headers)
        if api_key != self.api_key:
            return "invalid_key", web.json_response(
                INVALID_KEY, status=self.invalid_key_http_status
            )
        if (problem := self._validate(form)) is not None:
            return "validation_error", web.json_response(validation_error(problem))
        if (form["userid"], form["checktime"]) in self.punches_by_key():
            self.duplicate_answers += 1
            return "duplicate", web.json_response(ALREADY_EXISTS)
        if self.unexpected_errors > 0:
            self.unexpected_errors -= 1
            return "unexpected_error", web.json_response(UNEXPECTED_ERROR)
        await self._store(form)
        return "created", web.json_response(SUCCESS)

    def _validate(self, form: dict[str, str]) -> str | None:
        userid, checktime = form.get("userid", ""), form.get("checktime", "")
        if not userid:
            return "The userid field is required."
        if userid in self.invalid_userids:
            return f"The selected userid {userid} is invalid."
        if not _CHECKTIME.fullmatch(checktime) or _parse_datetime(checktime) is None:
            return "The checktime does not match the format Y-m-d\\TH:i:s."
        if not _INTEGER.fullmatch(form.get("checktype", "")):
            return "The checktype must be an integer."
        return None

    async def _store(self, form: dict[str, str]) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        record = {**form, "id": len(self.records) + 1, "created_at": now}
        record["received_at"] = time.monotonic()
        self.records.append(record)
        self.created_count += 1
        await self._notify()

    # -- POST /api/punches/ and /api/punches_range/ (downloads) --------------------------------

    async def download_day(self, request: web.Request) -> web.Response:
        fields = await _read_fields(request)
        if request.headers.get("APIKEY") != self.api_key:
            return web.json_response(INVALID_KEY, status=self.invalid_key_http_status)
        day = _parse_date(fields.get("punch_date", ""))
        if day is None:
            return web.json_response(validation_error("The punch_date must be yyyy-mm-dd."))
        return self._download(day, day, None)

    async def download_range(self, request: web.Request) -> web.Response:
        fields = await _read_fields(request)
        if request.headers.get("APIKEY") != self.api_key:
            return web.json_response(INVALID_KEY, status=self.invalid_key_http_status)
        start = _parse_date(fields.get("start_date", ""))
        end = _parse_date(fields.get("end_date", ""))
        if start is None or end is None:
            return web.json_response(validation_error("start_date and end_date: yyyy-mm-dd."))
        return self._download(start, end, fields.get("userid") or None)

    def _download(self, start: date, end: date, userid: str | None) -> web.Response:
        rows = [
            _download_row(record)
            for record in self.records
            if start.isoformat() <= record["checktime"][:10] <= end.isoformat()
            and (userid is None or record["userid"] == userid)
        ]
        return web.json_response({"status": "success", "message": rows, "error": ""})

    # -- POST /api/users/ and /api/employees/ ---------------------------------------------------

    async def list_users(self, request: web.Request) -> web.Response:
        return await self._employees(request, ("userid", "pwd", "idcard", "deptname"))

    async def list_employees(self, request: web.Request) -> web.Response:
        return await self._employees(request, None)

    async def _employees(
        self, request: web.Request, columns: tuple[str, ...] | None
    ) -> web.Response:
        await request.read()
        self.user_requests.append(request.path)
        await self._notify()
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        if self.users_fail_5xx > 0:
            self.users_fail_5xx -= 1
            return web.Response(status=503, text="Service Unavailable")
        if request.headers.get("APIKEY") != self.api_key:
            return web.json_response(INVALID_KEY, status=self.invalid_key_http_status)
        rows = [
            {k: v for k, v in user.items() if columns is None or k in columns}
            for user in self.users
        ]
        return web.json_response({"status": "success", "message": rows, "error": ""})


def _parse_datetime(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")  # noqa: DTZ007 - account wall time
    except ValueError:
        return None


def _parse_date(text: str) -> date | None:
    if not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _number(value: str | None, default: float = 0) -> int | float | str:
    """The download shows numeric ids as JSON numbers; keep anything else as sent."""
    if value is None or value == "":
        return default
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _download_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "userid": _number(record["userid"]),
        "checktime": record["checktime"].replace("T", " "),
        "checktype": int(record["checktype"]),
        "sensorid": _number(record.get("sensorid")),
        "worktype": _number(record.get("worktype")),
        "deleted": None,
        "reason": None,
        "hidden": 0,
        "hidden_reason": None,
        "devicename": None,
        "eventdescription": record.get("eventdescription", ""),
        "latitude": _number(record.get("latitude")),
        "longitude": _number(record.get("longitude")),
        "deviceserial": _number(record.get("deviceserial")),
        "created_at": record["created_at"],
        "location_name": None,
    }


async def _read_fields(request: web.Request) -> dict[str, str]:
    """Form fields; the vendor's own range example sends a JSON body, so accept that too."""
    raw = await request.read()
    if raw.lstrip().startswith(b"{"):
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {key: str(value) for key, value in (await request.post()).items()}


def make_app(fake: FakeGo2Clock) -> web.Application:
    @web.middleware
    async def echo(request: web.Request, handler: Handler) -> web.StreamResponse:
        if fake.echo_key is None:
            return await handler(request)
        await request.read()
        body = fake.echo_key(request.headers.get("APIKEY", ""))
        return web.Response(status=fake.echo_status, text=body, content_type="application/json")

    app = web.Application(middlewares=[echo])
    app.router.add_put("/api/punches/", fake.put_punch)
    app.router.add_post("/api/punches/", fake.download_day)
    app.router.add_post("/api/punches_range/", fake.download_range)
    app.router.add_post("/api/users/", fake.list_users)
    app.router.add_post("/api/employees/", fake.list_employees)
    return app


@asynccontextmanager
async def running_fake_go2clock(
    fake: FakeGo2Clock, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the fake on host:port (0: a free port) and yield its base URL."""
    async with serving(make_app(fake), host, port) as url:
        yield f"{url}"
