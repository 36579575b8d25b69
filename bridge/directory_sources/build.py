"""The enabled sources, from the settings. A source's null base_url or key falls back to its
sink's section (sinks.go2clock, sinks.mctime, sinks.timetrack), enabled or not."""

from __future__ import annotations

from typing import Protocol

import aiohttp
from pydantic import SecretStr

from bridge.config import ConfigError, Settings
from bridge.vendors.go2clock.users import Go2ClockUsers
from bridge.vendors.mctime.users import McTimeUsers
from bridge.vendors.q2.users import Q2Users
from bridge.directory_sources.records import Record
from bridge.vendors.timetrack.users import TimeTrackUsers

ORDER = ("go2clock", "q2", "mctime", "timetrack")  # merge order: the first source's name stands


class Source(Protocol):
    name: str

    def secrets(self) -> list[str]: ...

    async def fetch(self, session: aiohttp.ClientSession) -> list[Record]: ...


def _secret(own: SecretStr | None, fallback: SecretStr | None, key: str) -> SecretStr:
    secret = own if own is not None and own.get_secret_value() else fallback
    if secret is None or not secret.get_secret_value():
        msg = f"directory.sources.{key} (or {key}_file, or the sink's) is required when enabled"
        raise ConfigError(msg)
    return secret


def build_sources(settings: Settings) -> list[Source]:
    """Raises ConfigError when an enabled source has no credentials of its own or its sink's."""
    config, sinks = settings.directory.sources, settings.sinks
    sources: list[Source] = []
    if config.go2clock.enabled:
        own = config.go2clock
        sources.append(
            Go2ClockUsers(
                base_url=own.base_url or sinks.go2clock.base_url,
                api_key=_secret(own.api_key, sinks.go2clock.api_key, "go2clock.api_key"),
                timeout=own.timeout_seconds,
                id_column=sinks.go2clock.directory_column,
            )
        )
    if config.q2.enabled:
        q2 = config.q2
        assert q2.company_id is not None  # the config model requires it when enabled
        sources.append(
            Q2Users(
                url=q2.url,
                company_id=q2.company_id,
                developer_token=_secret(q2.developer_token, None, "q2.developer_token"),
                timeout=q2.timeout_seconds,
                badge_field=q2.badge_field,
                max_records=q2.max_records,
            )
        )
    if config.mctime.enabled:
        mc = config.mctime
        sources.append(
            McTimeUsers(
                base_url=mc.base_url or sinks.mctime.base_url,
                api_key=_secret(mc.api_key, sinks.mctime.api_key, "mctime.api_key"),
                timeout=mc.timeout_seconds,
                id_column=sinks.mctime.directory_column,
                join_on=mc.match_on,
                vendor_field=mc.vendor_field,
                first_page=mc.first_page,
                rate_per_second=sinks.mctime.rate_per_second,
            )
        )
    if config.timetrack.enabled:
        tt = config.timetrack
        sources.append(
            TimeTrackUsers(
                base_url=tt.base_url or sinks.timetrack.base_url,
                api_key=_secret(tt.api_key, sinks.timetrack.api_key, "timetrack.api_key"),
                api_secret=_secret(
                    tt.api_secret, sinks.timetrack.api_secret, "timetrack.api_secret"
                ),
                timeout=tt.timeout_seconds,
                id_column=sinks.timetrack.directory_column,
                join_on=tt.match_on,
                vendor_field=tt.vendor_field,
                page_size=tt.page_size,
            )
        )
    return sources
