"""McTime users: GET {base_url}/users?page=N (20 per page; the first page number is
configurable, the docs do not give it), header API_KEY. Items are {"message", "data": {...}};
`data.id` is the person's McTime userId, joined to a person by employee number or e-mail."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.config import Settings
from bridge.directory.http import request_json
from bridge.directory.records import NAME, Record, SourceError, clean_fields, credential
from bridge.vendors.mctime.api import USERS_PATH, auth_headers, limiter_for

PAGE_SIZE = 20
MAX_PAGES = 10_000


class McTimeUsers:
    name = "mctime"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        timeout: float,
        id_column: str,
        join_on: str,
        vendor_field: str,
        first_page: int = 1,
        rate_per_second: float = 10.0,  # sinks.mctime.rate_per_second: one limit per key
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._id_column = id_column
        self._join_on = join_on
        self._vendor_field = vendor_field
        self._first_page = first_page
        self._rate = rate_per_second

    @classmethod
    def from_settings(cls, settings: Settings) -> McTimeUsers:
        """From directory.sources.mctime; a null base_url or key is the sink's, and the sink's
        rate_per_second is the key's one limit."""
        mc, sink = settings.directory.sources.mctime, settings.sinks.mctime
        return cls(
            base_url=mc.base_url or sink.base_url,
            api_key=credential(mc.api_key, sink.api_key, "mctime.api_key"),
            timeout=mc.timeout_seconds,
            id_column=sink.directory_column,
            join_on=mc.match_on,
            vendor_field=mc.vendor_field,
            first_page=mc.first_page,
            rate_per_second=sink.rate_per_second,
        )

    def secrets(self) -> list[str]:
        return [self._api_key.get_secret_value()]

    async def fetch(self, session: aiohttp.ClientSession) -> list[Record]:
        records: list[Record] = []
        previous: list[Any] | None = None
        for page in range(self._first_page, self._first_page + MAX_PAGES):
            users = await self._page(session, page)
            if users and users == previous:
                msg = "GET /users repeats a page: is `page` ignored?"
                raise SourceError(msg)
            records += [record for user in users if (record := self._record(user)) is not None]
            if len(users) < PAGE_SIZE:
                return records
            previous = users
        msg = f"more than {MAX_PAGES} pages of users"
        raise SourceError(msg)

    async def _page(self, session: aiohttp.ClientSession, page: int) -> list[Any]:
        answer = await request_json(
            session,
            "GET",
            f"{self._base_url}{USERS_PATH}",
            timeout=self._timeout,
            headers=auth_headers(self._api_key),
            params={"page": str(page)},
            what="GET /users",
            secrets=[self._api_key],
            # McTime allows 10 requests/s per key: the sink's and reconcile's count too
            limiter=limiter_for(
                session, base_url=self._base_url, api_key=self._api_key, rate_per_second=self._rate
            ),
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
            msg = "GET /users: the answer has no items"
            raise SourceError(msg)
        if answer.get("valid") is False:
            msg = "GET /users: the answer is not valid"
            raise SourceError(msg)
        return [item.get("data") for item in answer["items"] if isinstance(item, dict)]

    def _record(self, user: object) -> Record | None:
        if not isinstance(user, dict):
            return None
        fields = clean_fields(
            {
                self._id_column: user.get("id"),
                self._join_on: user.get(self._vendor_field),
                NAME: user.get("name"),
            }
        )
        if self._id_column not in fields or self._join_on not in fields:
            return None  # nothing to join it by
        return Record(None, fields, join_on=self._join_on)
