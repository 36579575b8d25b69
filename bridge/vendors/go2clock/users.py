"""Go2Clock employees: POST /api/users/ (userid, idcard = the badge) and POST
/api/employees/ (fuller details: the name). Header APIKEY, answers in the JSON body as the
punch endpoints give them: {"status": "success", "message": [...]} or {"status": false,
"error": "Invalid API key "}. The users list also carries `pwd`: it is never read."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.config import Settings
from bridge.directory.http import request_json
from bridge.directory.records import (
    EMAIL,
    NAME,
    Record,
    SourceError,
    badge_of,
    clean_fields,
    credential,
)
from bridge.ops.redaction import mask_secrets
from bridge.vendors.go2clock.api import EMPLOYEES_PATH, USERS_PATH, auth_headers


class Go2ClockUsers:
    name = "go2clock"

    def __init__(
        self, *, base_url: str, api_key: SecretStr, timeout: float, id_column: str
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._id_column = id_column

    @classmethod
    def from_settings(cls, settings: Settings) -> Go2ClockUsers:
        """From directory.sources.go2clock; a null base_url or key is the sink's."""
        own, sink = settings.directory.sources.go2clock, settings.sinks.go2clock
        return cls(
            base_url=own.base_url or sink.base_url,
            api_key=credential(own.api_key, sink.api_key, "go2clock.api_key"),
            timeout=own.timeout_seconds,
            id_column=sink.directory_column,
        )

    def secrets(self) -> list[str]:
        return [self._api_key.get_secret_value()]

    async def fetch(self, session: aiohttp.ClientSession) -> list[Record]:
        users = await self._list(session, USERS_PATH)
        details = {str(row.get("userid")): row for row in await self._list(session, EMPLOYEES_PATH)}
        records = []
        for user in users:
            badge = badge_of(user.get("idcard"))
            if badge is None:
                continue  # no card: nothing to map
            more = details.get(str(user.get("userid")), {})
            fields = clean_fields(
                {
                    self._id_column: user.get("userid"),
                    NAME: more.get("name") or _full_name(more),
                    EMAIL: more.get("email"),
                    "department": user.get("deptname") or more.get("deptname"),
                }
            )
            if self._id_column in fields:
                records.append(Record(badge, fields))
        return records

    async def _list(self, session: aiohttp.ClientSession, path: str) -> list[dict[str, Any]]:
        answer = await request_json(
            session,
            "POST",
            f"{self._base_url}{path}",
            timeout=self._timeout,
            headers=auth_headers(self._api_key),
            data={},
            what=path,
            secrets=[self._api_key],
        )
        if not isinstance(answer, dict):
            msg = f"{path}: the answer is not a JSON object"
            raise SourceError(msg)
        if answer.get("status") != "success":
            error = str(answer.get("error") or answer.get("message") or "no reason given")
            error = mask_secrets(error, self.secrets())  # before the cut: a head is no whole
            if "api key" in error.lower():
                msg = f"{path}: credentials refused ({error.strip()[:100]})"
            else:
                msg = f"{path}: {answer.get('status')!s}: {error.strip()[:200]}"
            raise SourceError(msg)
        rows = answer.get("message")
        if not isinstance(rows, list):
            msg = f"{path}: the answer has no list of users"
            raise SourceError(msg)
        return [row for row in rows if isinstance(row, dict)]


def _full_name(row: dict[str, Any]) -> str:
    parts = (
        row.get("firstname") or row.get("first_name"),
        row.get("lastname") or row.get("last_name"),
    )
    return " ".join(str(part) for part in parts if part)
