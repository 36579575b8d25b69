"""A fake OpenTimeClock Q2 API: an aiohttp.web app answering as the seed
opentimeclock-q2-api.txt shows, for both read commands: api/q2QueryUsers and
api/q2QueryTimeCards.

One endpoint, /Jun-Inside-VPC (also /), taking its parameters from the query string (the docs'
URL sample) or from a JSON body (their jQuery and PHP samples), the body winning. Answers are
HTTP 200 {"statusCode": "SUCCESS"|"ERROR", "message", "nextRecord", "data"}; "nextRecord" is
the offset of the next page, "-1" when there is no more. maxRecords "" or absent means 5000;
more than 5000 is cut to 5000.

Undocumented, so chosen here: the ERROR messages are the ones the docs list in their comment
("Company ID not found.", "Developer token is not correct."); an unknown cmd answers ERROR
"Unknown command."; a nextRecord that is no offset answers ERROR "nextRecord is not valid.".

Switches are plain attributes a test flips; counters ("next N requests") count down.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from aiohttp import web

from bridge.vendors.serving import serving

ENDPOINT = "/Jun-Inside-VPC"
MAX_RECORDS = 5000
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
NOT_APPLICABLE = "0000-00-00 00:00:00"
ROLES = ("Admin", "Manager", "Employee", "Inactive")


def answer(status: str, message: str = "", next_record: str = "-1", data: Any = ()) -> web.Response:
    body = {"statusCode": status, "message": message, "nextRecord": next_record, "data": list(data)}
    return web.json_response(body)


def error(message: str) -> web.Response:
    return answer("ERROR", message)


class FakeQ2:
    """The company's users and time cards plus the switches and counters tests look at."""

    def __init__(
        self, company_id: str = "fake-company", developer_token: str = "fake-q2-token"
    ) -> None:
        self.company_id = company_id
        self.developer_token = developer_token
        self.users: list[dict[str, Any]] = []
        self.time_cards: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # cmd, params (token masked), answer
        # fault switches
        self.fail_5xx = 0
        self.fail_status = 503
        self.delay_seconds = 0.0
        # A vendor that quotes the token back: when set, every request is answered with
        # HTTP echo_status and the body echo_token makes of the developerToken it carried.
        self.echo_token: Callable[[str], str] | None = None
        self.echo_status = 200
        self._changed = asyncio.Condition()

    # -- for tests ---------------------------------------------------------------------------

    def add_user(
        self,
        full_name: str,
        *,
        digit_id: str = "",
        employee_number: str = "",
        role: str = "Employee",
        **extra: Any,
    ) -> dict[str, Any]:
        now = datetime.now().strftime(TIME_FORMAT)  # noqa: DTZ005 - the vendor's server time, no zone
        user = {
            "userFullName": full_name,
            "userName": full_name.replace(" ", "").lower(),
            "digitId": digit_id,
            "employeeNumber": employee_number,
            "email": f"{full_name.replace(' ', '.').lower()}@example.com",
            "mobilePhone": "",
            "role": role,
            "updatedDateTime": now,
            "createdDateTime": now,
            "overTimeRule": "",
            "departmentName": "",
            "hiredDate": "",
            "fullPartTime": "Full Time",
            "rateType": "Hourly Rate",
            "payRate": "0.00",
            "timeZone": "America/New_York",
            "pointOfContact": "",
            "dateOfBirth": "",
            "memo": "",
            **extra,
        }
        self.users.append(user)
        return user

    def add_time_card(
        self, user: dict[str, Any], in_time: str, out_time: str = NOT_APPLICABLE, **extra: Any
    ) -> dict[str, Any]:
        card = {
            "userFullName": user["userFullName"],
            "firstName": user["userFullName"].partition(" ")[0],
            "lastName": user["userFullName"].partition(" ")[2],
            "employeeNumber": user["employeeNumber"],
            "userName": user["userName"],
            "digitId": user["digitId"],
            "inDateTime": in_time,
            "outDateTime": out_time,
            "hours": "0.000",
            "entryType": 0,
            "jobName": "",
            "departmentName": user.get("departmentName", ""),
            "updateDateTime": in_time,
            "createdDateTime": in_time,
            **extra,
        }
        self.time_cards.append(card)
        return card

    def pages(self, cmd: str = "api/q2QueryUsers") -> int:
        return sum(1 for r in self.requests if r["cmd"] == cmd and r["answer"] == "SUCCESS")

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self._wait_until(lambda: len(self.requests) >= n, timeout)

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the one endpoint --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        params = {key: str(value) for key, value in request.query.items()}
        params.update(await _json_body(request))
        shown = {k: ("***" if k == "developerToken" else v) for k, v in params.items()}
        entry: dict[str, Any] = {
            "cmd": params.get("cmd", ""),
            "params": shown,
            "query": sorted(request.query),
            "answer": None,
        }
        self.requests.append(entry)
        await self._notify()
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        if self.fail_5xx > 0:
            self.fail_5xx -= 1
            entry["answer"] = self.fail_status
            return web.Response(status=self.fail_status, text="Service Unavailable")
        if self.echo_token is not None:
            entry["answer"] = "echo"
            body = self.echo_token(params.get("developerToken", ""))
            return web.Response(status=self.echo_status, text=body, content_type="application/json")
        response, entry["answer"] = self._answer(params)
        return response

    def _answer(self, params: dict[str, str]) -> tuple[web.Response, str]:
        if params.get("companyId") != self.company_id:
            return error("Company ID not found."), "ERROR"
        if params.get("developerToken") != self.developer_token:
            return error("Developer token is not correct."), "ERROR"
        cmd = params.get("cmd")
        if cmd == "api/q2QueryUsers":
            rows = self._users(params)
        elif cmd == "api/q2QueryTimeCards":
            rows = self._cards(params)
        else:
            return error("Unknown command."), "ERROR"
        if isinstance(rows, str):
            return error(rows), "ERROR"
        return _page(rows, params)

    def _users(self, params: dict[str, str]) -> list[dict[str, Any]] | str:
        rows = self.users
        role = params.get("role", "")
        if role not in ("", "ALL ROLES"):
            if role not in ROLES:
                return "Role not found."
            rows = [u for u in rows if u["role"] == role]
        filtered = _filter_name_and_department(rows, params)
        if isinstance(filtered, str):
            return filtered
        rows = filtered
        for field, stamp in (("createdDateTime", "created"), ("updatedDateTime", "updated")):
            low, high = params.get(f"{stamp}DateTimeFrom", ""), params.get(f"{stamp}DateTimeTo", "")
            rows = [
                u for u in rows if (not low or u[field] >= low) and (not high or u[field] <= high)
            ]
        return rows

    def _cards(self, params: dict[str, str]) -> list[dict[str, Any]] | str:
        low, high = params.get("dateTimeFrom", ""), params.get("dateTimeTo", "")
        rows = [c for c in self.time_cards if (not low or c["inDateTime"] >= low)]
        rows = [c for c in rows if not high or c["inDateTime"] <= high]
        filtered = _filter_name_and_department(rows, params)
        if isinstance(filtered, str):
            return filtered
        rows = filtered
        columns = [c for c in params.get("returnColumns", "").split("$") if c]
        if columns and params.get("returnColumns") != "ALL COLUMNS":
            rows = [{k: v for k, v in row.items() if k in columns} for row in rows]
        return rows


def _filter_name_and_department(
    rows: list[dict[str, Any]], params: dict[str, str]
) -> list[dict[str, Any]] | str:
    name = params.get("userFullName", "")
    if name not in ("", "ALL USERS"):
        rows = [r for r in rows if r.get("userFullName") == name]
        if not rows:
            return "User Full Name not found."
    department = params.get("departmentName", "")
    if department not in ("", "ALL DEPARTMENTS"):
        rows = [r for r in rows if r.get("departmentName") == department]
        if not rows:
            return "Department Name not found."
    return rows


def _page(rows: list[dict[str, Any]], params: dict[str, str]) -> tuple[web.Response, str]:
    start_text = params.get("nextRecord", "") or "0"
    limit_text = params.get("maxRecords", "") or str(MAX_RECORDS)
    if not start_text.isdigit():
        return error("nextRecord is not valid."), "ERROR"
    if not limit_text.isdigit() or int(limit_text) < 1:
        return error("maxRecords is not valid."), "ERROR"
    start, limit = int(start_text), min(int(limit_text), MAX_RECORDS)
    page = rows[start : start + limit]
    following = str(start + limit) if start + limit < len(rows) else "-1"
    return answer("SUCCESS", "", following, page), "SUCCESS"


async def _json_body(request: web.Request) -> dict[str, str]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return (
        {str(k): "" if v is None else str(v) for k, v in data.items()}
        if isinstance(data, dict)
        else {}
    )


def make_app(fake: FakeQ2) -> web.Application:
    app = web.Application()
    for path in (ENDPOINT, "/"):
        app.router.add_get(path, fake.handle)
        app.router.add_post(path, fake.handle)
    return app


@asynccontextmanager
async def running_fake_q2(
    fake: FakeQ2, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the fake on host:port (0: a free port) and yield its API URL (…/Jun-Inside-VPC)."""
    async with serving(make_app(fake), host, port) as url:
        yield f"{url}{ENDPOINT}"
