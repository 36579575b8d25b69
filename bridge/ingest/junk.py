"""How much junk a terminal may make the bridge keep: rejected payloads beyond a rate are only
counted, so a broken or hostile terminal cannot churn the disk or flood the log. An event with
an implausible device time (stored and held for an operator) counts as junk here too: a clock
stuck at 2099 must not grow the database faster than garbage can.

Every rejected message is counted; up to `per_terminal` a minute per terminal, and
`total` a minute over all terminals together (random topic levels make every message a new
"terminal"), it is also stored for inspection. Beyond that the terminal floods: one warning
line per terminal per minute says so and how many were not kept. The state is bounded: at most
`max_tracked` terminals are remembered, least recently seen forgotten first.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("bridge.ingest")

WARN_EVERY_SECONDS = 60.0
ALL_TERMINALS = "*"  # the key of the shared budget


@dataclasses.dataclass(slots=True)
class _Bucket:
    """A token bucket that refills to `capacity` over a minute, and its flood report."""

    tokens: float
    updated: float
    not_kept: int = 0  # since the last warning
    warned_at: float = float("-inf")


class JunkLimiter:
    def __init__(
        self,
        *,
        per_terminal: int,
        total: int,
        max_tracked: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_terminal = per_terminal
        self._total = total
        self._max_tracked = max_tracked
        self._clock = clock
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._shared = _Bucket(tokens=float(total), updated=clock())
        self.not_kept = 0  # rejected messages counted but not stored, since start

    def keep(self, terminal: str) -> bool:
        """True when this rejected message of `terminal` may be stored."""
        now = self._clock()
        bucket = self._bucket(terminal, now)
        _refill(bucket, self._per_terminal, now)
        _refill(self._shared, self._total, now)
        if bucket.tokens >= 1 and self._shared.tokens >= 1:
            bucket.tokens -= 1
            self._shared.tokens -= 1
            return True
        self.not_kept += 1
        # Whose budget ran out decides who is named: one terminal, or everyone together.
        name, over = (terminal, bucket) if bucket.tokens < 1 else (ALL_TERMINALS, self._shared)
        over.not_kept += 1
        if now - over.warned_at >= WARN_EVERY_SECONDS:
            log.warning(
                "terminal.flooding",
                terminal=name,
                not_kept=over.not_kept,
                limit_per_minute=self._per_terminal if over is bucket else self._total,
            )
            over.warned_at, over.not_kept = now, 0
        return False

    def _bucket(self, terminal: str, now: float) -> _Bucket:
        bucket = self._buckets.get(terminal)
        if bucket is None:
            if len(self._buckets) >= self._max_tracked:
                self._buckets.popitem(last=False)
            bucket = self._buckets[terminal] = _Bucket(
                tokens=float(self._per_terminal), updated=now
            )
        else:
            self._buckets.move_to_end(terminal)
        return bucket


def _refill(bucket: _Bucket, per_minute: int, now: float) -> None:
    elapsed = now - bucket.updated
    bucket.updated = now
    bucket.tokens = min(float(per_minute), bucket.tokens + elapsed * per_minute / 60.0)
