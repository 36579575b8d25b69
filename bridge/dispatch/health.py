"""Is a sink usable right now? ok, in an outage, or paused, and what to tell people about it.

A failed answer is first that one person's delivery to retry later (with its own back-off,
settled by the pump); the other people's deliveries keep going. Only evidence that the vendor is
down (bridge.dispatch.evidence: unreachable, or most of its recent answers failing) starts an
outage: then a failing vendor gets one probe at a time instead of every queued person's retry
at once, the probe interval backing off like a retry; when paused (credentials refused) it is
the slow `retry.pause_probe_seconds`. A 429 with Retry-After holds the whole sink that long,
outage or not: the vendor asked. The logs say when an outage starts, summarise it every
`log.summary_seconds` (backlog, oldest age, last error) and say when it ends: never a line per
retry per event.
"""

from __future__ import annotations

import random
import time
from typing import TypedDict

import structlog

from bridge.config import RetryConfig
from bridge.delivery import Outcome, Result
from bridge.dispatch.evidence import FailureWindow
from bridge.ops.metrics import Metrics
from bridge.store import DaemonStore

log = structlog.get_logger("bridge.health")

# A sink failing longer than this shows as "degraded" on the status page and in `status`.
DEGRADED_AFTER_SECONDS = 60.0


class SinkState(TypedDict):
    state: str  # sending | retrying | degraded | paused
    since: float | None  # epoch seconds
    last_error: str | None


def backoff_seconds(attempt: int, *, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter: half to all of initial * 2^(attempt-1), capped."""
    ceiling = min(maximum, initial * 2 ** min(attempt - 1, 30))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


class SinkHealth:
    def __init__(
        self, *, sink: str, retry: RetryConfig, summary_seconds: float, metrics: Metrics
    ) -> None:
        self._sink = sink
        self._retry = retry
        self._summary_seconds = summary_seconds
        self._metrics = metrics
        # Every enabled sink has the series from the start, so "not paused" reads as 0 on a
        # dashboard rather than as no data.
        metrics.sink_paused.labels(sink).set(0)
        self.paused_since: float | None = None
        self.outage_since: float | None = None
        self._failures = 0  # consecutive failed probes of this outage
        self._retries = 0  # failed attempts since the outage started
        self._last_error = ""
        self._gate_until = 0.0  # monotonic: no claims before this while failing
        self._hold_until = 0.0  # monotonic: no claims before this, the vendor's Retry-After
        self._next_summary = 0.0
        self._window = FailureWindow(size=retry.outage_window, ratio=retry.outage_failure_ratio)

    def state(self, *, now: float | None = None) -> SinkState:
        """What an operator should read about this sink now: sending; retrying (failing for
        less than DEGRADED_AFTER_SECONDS); degraded (failing longer); paused (credentials
        refused: nothing is sent until they change) — with since when and the last error."""
        now = time.time() if now is None else now
        if self.paused_since is not None:
            return {"state": "paused", "since": self.paused_since, "last_error": self._last_error}
        if self.outage_since is not None:
            degraded = now - self.outage_since >= DEGRADED_AFTER_SECONDS
            return {
                "state": "degraded" if degraded else "retrying",
                "since": self.outage_since,
                "last_error": self._last_error,
            }
        return {"state": "sending", "since": None, "last_error": None}

    @property
    def failing(self) -> bool:
        """In an outage or paused: one probe at a time."""
        return self.paused_since is not None or self.outage_since is not None

    def _closed_until(self) -> float:
        return max(self._gate_until, self._hold_until)

    def claim_limit(self, *, capacity: int, in_flight: int) -> int:
        """How many deliveries may be claimed now: none while held by a Retry-After; up to
        `capacity` held when healthy, else one probe when the gate is open and nothing is in
        flight."""
        if time.monotonic() < self._closed_until():
            return 0
        if not self.failing:
            return capacity - in_flight
        return 0 if in_flight else 1

    def may_send(self, *, probe: bool) -> bool:
        """May a delivery claimed earlier go out now? Not while the vendor's Retry-After runs,
        and in an outage only the probe it was claimed as."""
        if time.monotonic() < self._closed_until():
            return False
        return probe or not self.failing

    def probe_now(self) -> None:
        """Something changed (new credentials): the next claim may probe right away."""
        self._gate_until = 0.0

    def seconds_until_claims(self) -> float | None:
        """While failing or held: seconds until the next claim may be made; else None."""
        wait = self._closed_until() - time.monotonic()
        if not self.failing and wait <= 0:
            return None
        return max(0.0, wait)

    def record(self, result: Result) -> None:
        """Note a send's outcome; log a change of state once."""
        outcome = result.outcome
        if outcome is Outcome.PAUSED:
            self._pause(result.detail)
        elif outcome is Outcome.RETRY_LATER:
            self._window.add(failed=True)
            self._last_error = result.detail
            if result.retry_after is not None:  # the vendor asks the whole sink to wait
                wait = min(result.retry_after, self._retry.max_seconds)
                self._hold_until = max(self._hold_until, time.monotonic() + wait)
            if self.failing or result.unreachable or self._window.tripped:
                self._fail(result.detail, result.retry_after)
            # else: an isolated failure; the pump retries that delivery with its own back-off
        else:  # the vendor answered and took a decision: the sink works
            self._window.add(failed=False)
            self._recover()

    def _pause(self, reason: str) -> None:
        self._last_error = reason
        self._gate_until = time.monotonic() + self._retry.pause_probe_seconds
        if self.paused_since is None:
            self.paused_since = time.time()
            self._metrics.sink_paused.labels(self._sink).set(1)
            log.error("sink.paused", sink=self._sink, reason=reason)

    def _fail(self, error: str, retry_after: float | None) -> None:
        self._failures += 1
        self._retries += 1
        wait = backoff_seconds(
            self._failures, initial=self._retry.initial_seconds, maximum=self._retry.max_seconds
        )
        if retry_after is not None:
            wait = min(retry_after, self._retry.max_seconds)
        self._gate_until = time.monotonic() + wait
        if self.outage_since is None and self.paused_since is None:
            self.outage_since = time.time()
            self._next_summary = time.monotonic() + self._summary_seconds
            log.warning(
                "sink.outage_started",
                sink=self._sink,
                error=error,
                failed_of_last=f"{self._window.failures}/{self._retry.outage_window}",
            )

    def _recover(self) -> None:
        if self.paused_since is not None:
            self.paused_since = None
            self._metrics.sink_paused.labels(self._sink).set(0)
            log.warning("sink.resumed", sink=self._sink)
        if self.outage_since is not None:
            log.warning(
                "sink.outage_ended",
                sink=self._sink,
                lasted_seconds=round(time.time() - self.outage_since, 1),
                failed_attempts=self._retries,
            )
            self.outage_since = None
            self._window.clear()  # a fresh start: the outage's failures are not held against it
        self._failures = self._retries = 0
        self._gate_until = 0.0

    async def summarize_if_due(self, store: DaemonStore) -> float | None:
        """Log the periodic outage summary when it is due; seconds until the next one."""
        since = self.outage_since
        if since is None:
            return None
        now = time.monotonic()
        if now >= self._next_summary:
            status = await store.status(now=time.time())
            if self.outage_since != since:
                return None  # an answer ended the outage while the status was read
            entry = status["sinks"].get(self._sink)
            states = {} if entry is None else entry["states"]
            oldest = None if entry is None else entry["oldest_pending_seconds"]
            log.warning(
                "sink.outage_summary",
                sink=self._sink,
                backlog=states.get("pending", 0) + states.get("inflight", 0),
                oldest_seconds=None if oldest is None else round(oldest),
                failed_attempts=self._retries,
                last_error=self._last_error,
                outage_seconds=round(time.time() - since),
            )
            self._next_summary = now + self._summary_seconds
        return max(0.0, self._next_summary - now)
