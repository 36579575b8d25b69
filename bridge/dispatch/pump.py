"""One pump per sink: claims due deliveries, sends them, settles the outcome.

Order per person is enforced by the claim query (only the oldest undelivered punch of a person
can be claimed, and only while none of theirs is in flight); different people go in parallel up
to the sink's concurrency.

To keep every sending slot busy, the pump claims ahead: up to concurrency + CLAIM_AHEAD
deliveries are held at once (sending, waiting for a slot, or being settled), claimed in
batches, so that neither a claim nor a settle commit stands between one request's end and the
next one's start. A claimed delivery that has not been sent when the sink starts failing (an
outage, not one failed request: see health.py), when the vendor asks it to wait (429 with
Retry-After), or when the bridge stops, is handed back unsent; after a crash it goes out at the
next start with an attempt counted, and the stateful sinks check the vendor first, as for any
resend.

The pump sleeps until woken by new work, a settled delivery or the next due time, and looks
again every RECHECK_SECONDS at most, for what repair commands in another process changed (one
indexed query; no busy loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import structlog

from bridge.config import RetryConfig
from bridge.delivery import DeliveryState, Job, Outcome, Result, Sink
from bridge.dispatch.health import SinkHealth, backoff_seconds
from bridge.ops.metrics import Metrics
from bridge.store import DaemonStore, StoreWriteError

log = structlog.get_logger("bridge.dispatch")


# Told the delivery's new state (delivered, pending, dead, held) after each settle.
class Replies(Protocol):
    """Where a terminal hears what became of its punch at a vendor (ingest's Feedback)."""

    def send(self, terminal: str, message: Mapping[str, Any]) -> None: ...


# The settled states a terminal is told about (mqtt.ack_delivery).
REPLIED_STATES = frozenset({DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.HELD})


@runtime_checkable
class RateLimited(Protocol):
    limiter: object


STORE_RETRY_SECONDS = 2.0
CLOCK_SLACK_SECONDS = 60.0
# The store wakes the dispatcher on every change that makes work due, another process's
# repairs included (Store.watch_other_writers); this only bounds what a missed signal costs.
RECHECK_SECONDS = 60.0
SETTLE_ATTEMPTS = 30
# Deliveries held beyond the concurrency (claimed, waiting for a slot or being settled), so
# that the claim and settle commits (a few ms each under load) never leave a slot idle.
CLAIM_AHEAD = 32


class Dispatcher:
    def __init__(
        self,
        *,
        sink: Sink,
        store: DaemonStore,
        concurrency: int,
        retry: RetryConfig,
        metrics: Metrics,
        replies: Replies | None = None,
        summary_seconds: float = 60.0,
        hold_late: bool = False,
        renew_seconds: float | None = None,
    ) -> None:
        self.sink = sink
        # On a store shared by several bridges, claims are leases: renewed this often while
        # their deliveries are held here, so none goes to another bridge while being sent.
        self._renew_seconds = renew_seconds
        self._held: dict[asyncio.Task[None], Job] = {}
        # The vendor keeps state per person (a running clock, an open shift): a punch older
        # than one already applied there is held, never sent out of order.
        self._hold_late = hold_late
        self._store = store
        self._concurrency = concurrency
        self._retry = retry
        self._metrics = metrics
        self._replies = replies
        # No retry is scheduled further ahead than this; a later one means the clock went back.
        self._horizon = retry.max_seconds + CLOCK_SLACK_SECONDS
        # Set by the store after a commit that may have made one of this sink's deliveries
        # due (new events, people mapped, a repair), and by this dispatcher when a send ends.
        self._wake = store.work.event(sink.name)
        # Claimed and not settled yet: waiting for a slot, sending, or being settled.
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)  # requests at the vendor at once
        self._capacity = concurrency + CLAIM_AHEAD
        self._claim_batch = max(1, min(self._capacity // 4, 16))
        self._waiting_for_slot = 0
        self._stopping = False
        self._store_failing = False
        self.health = SinkHealth(
            sink=sink.name, retry=retry, summary_seconds=summary_seconds, metrics=metrics
        )
        self.counts: dict[str, int] = dict.fromkeys(
            ("delivered", "duplicate", "retry", "dead", "held"), 0
        )

    @property
    def paused_since(self) -> float | None:
        return self.health.paused_since

    def replace_sink(self, sink: Sink) -> None:
        """New credentials (SIGHUP): sends from now on use them, and a paused sink is probed
        at once rather than at the next slow probe. Sends in flight finish with the old ones."""
        if isinstance(self.sink, RateLimited) and isinstance(sink, RateLimited):
            sink.limiter = self.sink.limiter  # the vendor's rate window carries on
        self.sink = sink
        self.health.probe_now()
        self.wake()

    def wake(self) -> None:
        """New work may be due (an event was stored, a person was mapped)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, *, grace_seconds: float = 10.0) -> None:
        async with asyncio.TaskGroup() as sends:
            renewing = None
            if self._renew_seconds is not None:
                renewing = sends.create_task(self._renew_forever(), name="leases")
            try:
                await self._pump(sends, stop)
            finally:
                self._stopping = True
                await self._drain(grace_seconds)
                if renewing is not None:
                    renewing.cancel()

    async def _renew_forever(self) -> None:
        """Extend the leases of the deliveries held here (claimed, not settled yet)."""
        assert self._renew_seconds is not None  # noqa: S101 - run() starts this only then
        while True:
            await asyncio.sleep(self._renew_seconds)
            try:
                await self._store.renew(list(self._held.values()), now=time.time())
            except StoreWriteError as err:  # the lease may run out: the others resend it
                log.warning("store.lease_renewal_failed", sink=self.sink.name, error=str(err))

    async def _pump(self, sends: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                pause = await self._claim_and_start(sends)
                summary = await self.health.summarize_if_due(self._store)
                if summary is not None:
                    pause = summary if pause is None else min(pause, summary)
            except StoreWriteError as err:
                if not self._store_failing:  # once per spell, not every few seconds
                    log.error("store.write_failed", sink=self.sink.name, error=str(err))  # noqa: TRY400 - expected
                self._store_failing = True
                pause = STORE_RETRY_SECONDS
            else:
                self._store_failing = False
            await self._sleep(stop, pause)

    async def _claim_and_start(self, sends: asyncio.TaskGroup) -> float | None:
        """Claim what there is room for and start it; seconds until the pump should look again
        (None: when woken, which a settle in progress will do)."""
        held = len(self._in_flight)
        limit = self.health.claim_limit(capacity=self._capacity, in_flight=held)
        # A small claim only when nothing is waiting for a slot: otherwise wait for room for a
        # batch, and spare the database a transaction per delivery.
        if limit < self._claim_batch and self._waiting_for_slot:
            limit = 0
        if limit == 0:
            # Nothing in flight to wake us: look again when the probe gate or a hold opens.
            return None if held else self.health.seconds_until_claims()
        probe = self.health.failing
        claim = await self._store.claim_batch(
            self.sink.name,
            limit=limit,
            now=time.time(),
            horizon=self._horizon,
            hold_late=self._hold_late,
            # unsaid: not harmless, so the claim is flushed (bridge/store/durability.py)
            resend_harmless=getattr(self.sink, "resend_harmless", False),
        )
        for job, reason in claim.late:
            self._note_late(job, reason)
        if claim.jobs:
            log.debug("delivery.claimed", sink=self.sink.name, count=len(claim.jobs))
        for job in claim.jobs:
            self._waiting_for_slot += 1
            task = sends.create_task(
                self._deliver(job, probe=probe), name=f"send[{self.sink.name}]"
            )
            self._in_flight.add(task)
            self._held[task] = job
            task.add_done_callback(self._on_delivery_done)
        if len(claim.jobs) + len(claim.late) == limit:
            return None  # there may be more: a settle wakes us when there is room
        if claim.next_due is None:
            return RECHECK_SECONDS
        return min(RECHECK_SECONDS, max(0.0, claim.next_due - time.time()))

    async def _sleep(self, stop: asyncio.Event, seconds: float | None) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _on_delivery_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._held.pop(task, None)
        self._wake.set()

    async def _drain(self, grace_seconds: float) -> None:
        """On stop: requests in flight get the grace period, then are cancelled (and retried
        at the next start, because their delivery stays 'inflight'); deliveries not yet sent
        are handed back."""
        if not self._in_flight:
            return
        _, late = await asyncio.wait(set(self._in_flight), timeout=grace_seconds)
        for task in late:
            task.cancel()

    async def _deliver(self, job: Job, *, probe: bool) -> None:
        with structlog.contextvars.bound_contextvars(
            sink=self.sink.name, event_key=job.event_key, person=job.person, attempt=job.attempt
        ):
            result = await self._send_when_a_slot_is_free(job, probe=probe)
            if result is not None:
                # Settling must finish even if shutdown cancels us now: the vendor has it.
                await asyncio.shield(self._settle_until_written(job, result))

    async def _send_when_a_slot_is_free(self, job: Job, *, probe: bool) -> Result | None:
        """The sink's answer; None when the delivery was handed back unsent."""
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            self._waiting_for_slot -= 1
            await asyncio.shield(self._hand_back(job))
            raise
        self._waiting_for_slot -= 1
        try:
            if self._stopping or not self.health.may_send(probe=probe):
                # Claimed ahead, but the sink has failed since (one probe at a time now), the
                # vendor asked it to wait, or the bridge is stopping: not sent, so it must not
                # count as an attempt.
                await asyncio.shield(self._hand_back(job))
                return None
            try:
                result = await self.sink.send(job)
            except Exception as err:  # a sink bug must not stop the pump
                log.exception("delivery.error")
                result = Result.retry(f"internal error: {type(err).__name__}")
            # Before the slot goes to the next delivery: if the sink just failed, that one
            # must see it and be handed back rather than sent.
            self.health.record(result)
            return result
        finally:
            self._slots.release()

    async def _hand_back(self, job: Job) -> None:
        try:
            await self._store.unclaim([job])
        except StoreWriteError as err:  # it stays 'inflight' and goes out at the next start
            log.debug("store.write_failed", error=str(err))

    async def _settle_until_written(self, job: Job, result: Result) -> None:
        """A settle that fails to write (disk full) is tried again; if it never succeeds the
        delivery stays 'inflight', is sent again at the next start, and the vendor's duplicate
        check keeps that harmless."""
        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                await self._settle(job, result)
            except StoreWriteError as err:
                level = log.error if attempt == 1 else log.debug
                level("store.write_failed", error=str(err), settle_attempt=attempt)
                await asyncio.sleep(STORE_RETRY_SECONDS)
            else:
                return

    async def _settle(self, job: Job, result: Result) -> None:
        now = time.time()
        if result.outcome is Outcome.RETRY_LATER and await self._store.expire(
            job, now=now, max_age_days=self._retry.max_age_days
        ):
            self.counts["dead"] += 1
            log.error("delivery.dead", reason="too old", last_error=result.detail)
            self._reply(job, DeliveryState.DEAD)
            return
        delay = result.retry_after
        if delay is not None:
            delay = min(delay, self._retry.max_seconds)  # the vendor's wish, within our cap
        else:
            delay = backoff_seconds(
                job.attempt, initial=self._retry.initial_seconds, maximum=self._retry.max_seconds
            )
        state = await self._store.settle(job, result, retry_at=now + delay, now=now)
        self._reply(job, state)
        self._metrics.deliveries.labels(self.sink.name, result.outcome.value).inc()
        if result.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            self._metrics.latency.labels(self.sink.name).observe(max(0.0, now - job.stored_at))
        self._note(result, delay)

    def _note_late(self, job: Job, reason: str) -> None:
        self.counts["held"] += 1
        self._metrics.held.labels(self.sink.name, "late").inc()
        log.warning(
            "delivery.held",
            sink=self.sink.name,
            event_key=job.event_key,
            person=job.person,
            reason=reason,
        )
        self._reply(job, DeliveryState.HELD)

    def _reply(self, job: Job, state: DeliveryState) -> None:
        if self._replies is not None and state in REPLIED_STATES:
            self._replies.send(
                job.terminal,
                {
                    "id": job.source_id,
                    "status": state.value,
                    "sink": job.sink,
                    "action": job.action.value,
                },
            )

    def _note(self, result: Result, delay: float) -> None:
        outcome = result.outcome
        if outcome is Outcome.PAUSED:
            return
        if outcome is Outcome.DELIVERED:
            self.counts["delivered"] += 1
            if result.warn:
                log.warning("delivery.sent", vendor_warning=result.detail)
            else:
                log.info("delivery.sent")
        elif outcome is Outcome.DUPLICATE:
            self.counts["duplicate"] += 1
            log.info("delivery.sent", vendor_duplicate=True, detail=result.detail)
        elif outcome is Outcome.HELD:
            self.counts["held"] += 1
            self._metrics.held.labels(self.sink.name, "vendor").inc()
            log.warning("delivery.held", reason=result.detail)
        elif outcome is Outcome.RETRY_LATER:
            self.counts["retry"] += 1
            # Debug only: the outage lines (start, summaries, end) tell people on call.
            log.debug("delivery.retry", error=result.detail, retry_in=round(delay, 1))
        else:
            self.counts["dead"] += 1
            log.error("delivery.dead", error=result.detail)
