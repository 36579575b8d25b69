"""OpenTimeClock Q2 users: cmd api/q2QueryUsers, POSTed as JSON (companyId and
developerToken go in the body, never in a URL), paged by `nextRecord` ("-1": no more) with at
most `maxRecords` (<= 5000) per answer. `digitId` or `employeeNumber` (configurable) is the
badge; Inactive users are left out, so their badges are not mapped."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.config import Settings
from bridge.directory.http import request_json
from bridge.directory.records import (
    EMAIL,
    EMPLOYEE_NUMBER,
    NAME,
    ROLE,
    Record,
    SourceError,
    badge_of,
    clean_fields,
    credential,
)
from bridge.ops.redaction import mask_secrets
from bridge.vendors.q2.api import NO_MORE, QUERY_USERS, SUCCESS, auth_fields

MAX_PAGES = 1000  # 5 million users: a server that never says "-1" is stopped here
INACTIVE = "inactive"


class Q2Users:
    name = "q2"

    def __init__(
        self,
        *,
        url: str,
        company_id: str,
        developer_token: SecretStr,
        timeout: float,
        badge_field: str = "digitId",
        max_records: int = 5000,
    ) -> None:
        self._url = url
        self._company_id = company_id
        self._token = developer_token
        self._timeout = timeout
        self._badge_field = badge_field
        self._max_records = max_records

    @classmethod
    def from_settings(cls, settings: Settings) -> Q2Users:
        """From directory.sources.q2 (its own credentials: Q2 is no sink)."""
        q2 = settings.directory.sources.q2
        if q2.company_id is None:  # the config model requires it when enabled
            msg = "directory.sources.q2.company_id is required"
            raise ValueError(msg)
        return cls(
            url=q2.url,
            company_id=q2.company_id,
            developer_token=credential(q2.developer_token, None, "q2.developer_token"),
            timeout=q2.timeout_seconds,
            badge_field=q2.badge_field,
            max_records=q2.max_records,
        )

    def secrets(self) -> list[str]:
        return [self._token.get_secret_value()]

    async def fetch(self, session: aiohttp.ClientSession) -> list[Record]:
        records: list[Record] = []
        next_record = "0"
        for _ in range(MAX_PAGES):
            rows, following = await self._page(session, next_record)
            records += [record for row in rows if (record := self._record(row)) is not None]
            if following == NO_MORE:
                return records
            if following == next_record:
                msg = f"nextRecord does not advance (stuck at {following})"
                raise SourceError(msg)
            next_record = following
        msg = f"more than {MAX_PAGES} pages of users"
        raise SourceError(msg)

    async def _page(
        self, session: aiohttp.ClientSession, next_record: str
    ) -> tuple[list[dict[str, Any]], str]:
        query = {
            "cmd": QUERY_USERS,
            **auth_fields(self._company_id, self._token),
            "nextRecord": next_record,
            "maxRecords": str(self._max_records),
            "userFullName": "",
            "departmentName": "",
            "role": "",
        }
        answer = await request_json(
            session, "POST", self._url, timeout=self._timeout, json=query, secrets=[self._token]
        )
        if not isinstance(answer, dict):
            msg = "the answer is not a JSON object"
            raise SourceError(msg)
        if answer.get("statusCode") != SUCCESS:
            # masked before the cut: a token cut short would not be found whole any more
            message = str(answer.get("message") or "no reason given")
            message = mask_secrets(message, self.secrets()).strip()[:200]
            msg = f"{answer.get('statusCode')!s}: {message}"
            raise SourceError(msg)
        data = answer.get("data") or []
        if not isinstance(data, list):
            msg = "the answer's data is not a list"
            raise SourceError(msg)
        following = str(answer.get("nextRecord", NO_MORE)).strip()
        return [row for row in data if isinstance(row, dict)], following

    def _record(self, row: dict[str, Any]) -> Record | None:
        if str(row.get("role", "")).strip().lower() == INACTIVE:
            return None
        badge = badge_of(row.get(self._badge_field))
        if badge is None:
            return None
        name = row.get("userFullName") or " ".join(
            str(part) for part in (row.get("firstName"), row.get("lastName")) if part
        )
        fields = clean_fields(
            {
                NAME: name,
                EMPLOYEE_NUMBER: row.get("employeeNumber"),
                EMAIL: row.get("email"),
                ROLE: row.get("role"),
                "department": row.get("departmentName"),
            }
        )
        return Record(badge, fields)
