"""A sliding-window rate limiter for a vendor that counts requests by their arrival.

The vendor counts the requests that *arrive* in any window of `period` seconds; the bridge only
knows when it let one go (the grant) and when its exchange ended (the answer read, or the
exchange failed). A request arrives somewhere in between. Counting grants alone (the last
`limit` grant times, `period` apart) is not enough: a request that waits for a connection or a
slow network arrives late while the next one arrives on time, and the vendor sees `limit + 1` in
one second (it did: 11 in a second, and a 429, once in three 600-event runs at McTime).

So each grant is a `Grant` the exchange reports `done()` on, and a new request starts only when
fewer than `limit` earlier ones may still arrive within `period` of it: an earlier request no
longer counts once it ended at least `period` ago; one still in flight always counts. Every
window of `period` at the vendor then holds at most `limit` arrivals, whatever the round trip
(proof: take the window's arrival whose grant came last; every other arrival in the window ended
after that grant minus `period`, so it counted when that grant was made). The price is the round
trip: at most `limit` requests per `period` + round trip.

Waiters are served in arrival order (asyncio.Lock is FIFO); a waiter sleeps until the exact
moment a slot frees up (or until a request in flight ends), so there is no polling. A cancelled
waiter takes no slot. A token bucket would let a full bucket plus a second's refill through in
one second, twice the limit in a sliding window.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable


class Grant:
    """One request's place in the window: in flight until `done()`."""

    __slots__ = ("_limiter", "ended", "granted")

    def __init__(self, limiter: RateLimiter, granted: float) -> None:
        self._limiter = limiter
        self.granted = granted
        self.ended: float | None = None

    def done(self) -> None:
        """The exchange ended: the request has arrived by now, if it ever does. Idempotent."""
        if self.ended is None:
            self.ended = self._limiter.ended(self)


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
        self._live: list[Grant] = []  # grants that may still arrive within `period` of now
        self._blocked_until = -math.inf
        self._lock = asyncio.Lock()
        self._one_ended = asyncio.Event()

    @classmethod
    def per_second(cls, rate: float, *, margin: float = 0.0, **kwargs: object) -> RateLimiter:
        """At most `rate` requests in any 1-second window (rounded down; at least one request
        per 1/rate seconds below 1/s). `margin` widens the window for clock granularity."""
        if rate <= 0:
            msg = "rate must be > 0"
            raise ValueError(msg)
        limit = max(1, math.floor(rate))
        period = max(1.0, 1.0 / rate) + margin
        return cls(limit, period, **kwargs)  # type: ignore[arg-type]

    def hold(self, seconds: float) -> None:
        """Grant nothing for the next `seconds` (the vendor answered 429 with Retry-After)."""
        self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))

    def ended(self, _grant: Grant) -> float:
        """A grant's exchange ended now (called by Grant.done); wakes a waiter."""
        self._one_ended.set()
        return self._clock()

    @property
    def in_flight(self) -> int:
        return sum(1 for grant in self._live if grant.ended is None)

    def _wait_seconds(self, now: float) -> float:
        """How long until one more request may start (math.inf: until one in flight ends)."""
        self._live = [g for g in self._live if g.ended is None or g.ended > now - self.period]
        free_at = self._blocked_until
        excess = len(self._live) - self.limit + 1  # this many must stop counting first
        if excess > 0:
            ends = sorted(g.ended for g in self._live if g.ended is not None)
            if len(ends) < excess:
                return math.inf
            free_at = max(free_at, ends[excess - 1] + self.period)
        return free_at - now

    async def acquire(self) -> Grant:
        """Wait until one more request may start now, and count it until `done()` and for
        `period` after."""
        async with self._lock:
            while (wait := self._wait_seconds(self._clock())) > 0:
                if wait == math.inf:
                    self._one_ended.clear()
                    await self._one_ended.wait()
                else:
                    await self._sleep(wait)
            grant = Grant(self, self._clock())
            self._live.append(grant)
            return grant
