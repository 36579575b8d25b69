"""The enabled sources, from the settings and the vendor registry (bridge.vendors.registry). A
source's null base_url or key falls back to its sink's section (sinks.go2clock, sinks.mctime,
sinks.timetrack), enabled or not."""

from __future__ import annotations

from typing import Protocol

from bridge.config import Settings
from bridge.directory.records import Record
from bridge.http import Session
from bridge.vendors.registry import VENDORS

# merge order: the first source's name stands
ORDER = tuple(vendor.name for vendor in VENDORS if vendor.users is not None)


class Source(Protocol):
    name: str

    def secrets(self) -> list[str]: ...

    async def fetch(self, session: Session) -> list[Record]: ...


def build_sources(settings: Settings) -> list[Source]:
    """Raises ConfigError when an enabled source has no credentials of its own or its sink's."""
    enabled = settings.directory.sources.enabled()
    return [
        vendor.users(settings)
        for vendor in VENDORS
        if vendor.users is not None and vendor.name in enabled
    ]
