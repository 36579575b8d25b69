"""TimeTrack users: GET {base_url}/api/v2/ext/users?page_number=N&limit=L (pages from 0,
limit <= 1000), headers X-TimeTrack-Api-Key and -Secret. The list is a bare JSON array, or an
object holding it (the docs show neither). `username` is the person's TimeTrack id, joined to
a person by employee number or e-mail."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.config import Settings
from bridge.directory.http import request_json
from bridge.directory.records import NAME, Record, SourceError, clean_fields, credential
from bridge.vendors.timetrack.api import USERS_PATH, auth_headers

MAX_PAGES = 10_000
_ENVELOPES = ("data", "items", "users", "results")


class TimeTrackUsers:
    name = "timetrack"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        api_secret: SecretStr,
        timeout: float,
        id_column: str,
        join_on: str,
        vendor_field: str,
        page_size: int = 1000,
    ) -> None:
        self._url = f"{base_url}{USERS_PATH}"
        self._api_key = api_key
        self._api_secret = api_secret
        self._timeout = timeout
        self._id_column = id_column
        self._join_on = join_on
        self._vendor_field = vendor_field
        self._page_size = page_size

    @classmethod
    def from_settings(cls, settings: Settings) -> TimeTrackUsers:
        """From directory.sources.timetrack; a null base_url, key or secret is the sink's."""
        tt, sink = settings.directory.sources.timetrack, settings.sinks.timetrack
        return cls(
            base_url=tt.base_url or sink.base_url,
            api_key=credential(tt.api_key, sink.api_key, "timetrack.api_key"),
            api_secret=credential(tt.api_secret, sink.api_secret, "timetrack.api_secret"),
            timeout=tt.timeout_seconds,
            id_column=sink.directory_column,
            join_on=tt.match_on,
            vendor_field=tt.vendor_field,
            page_size=tt.page_size,
        )

    def secrets(self) -> list[str]:
        return [self._api_key.get_secret_value(), self._api_secret.get_secret_value()]

    async def fetch(self, session: aiohttp.ClientSession) -> list[Record]:
        records: list[Record] = []
        for page in range(MAX_PAGES):
            users = await self._page(session, page)
            records += [record for user in users if (record := self._record(user)) is not None]
            if len(users) < self._page_size:
                return records
        msg = f"more than {MAX_PAGES} pages of users"
        raise SourceError(msg)

    async def _page(self, session: aiohttp.ClientSession, page: int) -> list[Any]:
        headers = auth_headers(self._api_key, self._api_secret)
        params = {"page_number": str(page), "limit": str(self._page_size)}
        answer = await request_json(
            session,
            "GET",
            self._url,
            timeout=self._timeout,
            headers=headers,
            params=params,
            what="GET users",
            secrets=[self._api_key, self._api_secret],
        )
        if isinstance(answer, dict):
            answer = next((answer[k] for k in _ENVELOPES if isinstance(answer.get(k), list)), None)
        if not isinstance(answer, list):
            msg = "GET users: the answer holds no list of users"
            raise SourceError(msg)
        return answer

    def _record(self, user: object) -> Record | None:
        if not isinstance(user, dict):
            return None
        name = user.get("name") or " ".join(
            str(part) for part in (user.get("firstName"), user.get("lastName")) if part
        )
        fields = clean_fields(
            {
                self._id_column: user.get("username"),
                self._join_on: user.get(self._vendor_field),
                NAME: name,
            }
        )
        if self._id_column not in fields or self._join_on not in fields:
            return None
        return Record(None, fields, join_on=self._join_on)
