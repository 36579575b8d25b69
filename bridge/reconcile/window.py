"""The date range of a reconciliation: whole local days, and the chunks a vendor is read in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Window:
    """Days `first` .. `last` (inclusive) in the zone `tz`."""

    first: date
    last: date
    tz: ZoneInfo

    def __post_init__(self) -> None:
        if self.last < self.first:
            msg = f"--to {self.last} is before --from {self.first}"
            raise ValueError(msg)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def day_start(self, day: date) -> datetime:
        """Local midnight of `day`, aware (in the window's zone)."""
        return datetime.combine(day, time(), tzinfo=self.tz)

    @property
    def start(self) -> datetime:
        return self.day_start(self.first).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: the start of the day after `last`, UTC."""
        return self.day_start(self.last + timedelta(days=1)).astimezone(UTC)

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def day_of(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).date().isoformat()

    def chunks(self, max_days: int) -> Iterator[Window]:
        """Consecutive sub-windows of at most `max_days` days covering this one."""
        first = self.first
        while first <= self.last:
            last = min(self.last, first + timedelta(days=max_days - 1))
            yield Window(first, last, self.tz)
            first = last + timedelta(days=1)

    def chunk_count(self, max_days: int) -> int:
        return -(-self.days // max_days)

    def in_zone(self, tz: ZoneInfo) -> Window:
        return Window(self.first, self.last, tz)
