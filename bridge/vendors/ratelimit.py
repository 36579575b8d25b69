"""A sliding-window rate limiter for one sink instance: at most `limit` starts per `period`.

A token bucket would let a full bucket plus a second's refill through in one second (twice the
vendor's limit in a sliding window); this limiter remembers the last `limit` grant times instead
and lets a request start only when the oldest of them is at least `period` seconds old, so no
window of `period` seconds ever holds more than `limit` grants. Waiters are served in arrival
order (asyncio.Lock is FIFO); a waiter sleeps until the exact moment a slot frees up, so there
is no polling. A cancelled waiter takes no slot.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable


class RateLimiter:
    def __init__(
        self,
        limit: int,
        period: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if limit < 1 or period <= 0:
            msg = "limit must be >= 1 and period > 0"
            raise ValueError(msg)
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[float] = deque(maxlen=limit)
        self._blocked_until = -math.inf
        self._lock = asyncio.Lock()

    @classmethod
    def per_second(cls, rate: float, *, margin: float = 0.0, **kwargs: object) -> RateLimiter:
        """At most `rate` requests in any 1-second window (rounded down; at least one request
        per 1/rate seconds below 1/s). `margin` widens the window to absorb network jitter."""
        if rate <= 0:
            msg = "rate must be > 0"
            raise ValueError(msg)
        limit = max(1, math.floor(rate))
        period = max(1.0, 1.0 / rate) + margin
        return cls(limit, period, **kwargs)  # type: ignore[arg-type]

    def hold(self, seconds: float) -> None:
        """Grant nothing for the next `seconds` (the vendor answered 429 with Retry-After)."""
        self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))

    def _wait_seconds(self, now: float) -> float:
        free_at = self._blocked_until
        if len(self._grants) == self.limit:
            free_at = max(free_at, self._grants[0] + self.period)
        return free_at - now

    async def acquire(self) -> None:
        """Wait until one more request may start now, and count it."""
        async with self._lock:
            while (wait := self._wait_seconds(self._clock())) > 0:
                await self._sleep(wait)
            self._grants.append(self._clock())

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        return None
