"""One parser per PayloadFormat: a decoded JSON object → ClockEvent, None, or PayloadError.

Callers use bridge.routing.parse_event, which decodes the bytes and finds the terminal first.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from bridge.events import PayloadFormat
from bridge.formats import canonical, tasmota

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from bridge.events import ClockEvent


class Parser(Protocol):
    def __call__(
        self,
        data: dict[str, Any],
        *,
        terminal: str,
        site_tz: ZoneInfo,
        received_at: datetime,
    ) -> ClockEvent | None: ...


PARSERS: Mapping[PayloadFormat, Parser] = MappingProxyType(
    {PayloadFormat.CANONICAL: canonical.parse, PayloadFormat.TASMOTA: tasmota.parse},
)
