"""The ingest loop: connect, consume in batches, store, acknowledge, reconnect forever."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

import aiomqtt
import structlog

from bridge.config import MqttConfig
from bridge.delivery import EventStatus
from bridge.events import ClockEvent, TimeLimits
from bridge.ingest.client import OFFLINE, ONLINE, connected, raise_lost_cancellation
from bridge.ingest.feedback import Feedback
from bridge.ingest.junk import JunkLimiter
from bridge.ingest.mqtt import ReadGate, acknowledge
from bridge.ingest.skew import ClockSkewWatch
from bridge.ingest.takeover import HINT, TakeoverWatch
from bridge.ops.metrics import Metrics
from bridge.routing import Router, payload_id, rejection
from bridge.store import (
    DaemonStore,
    GroupResolver,
    Incoming,
    PersonResolver,
    Rejection,
    Stored,
    StoreWriteError,
)

log = structlog.get_logger("bridge.ingest")

INVALID_TERMINAL = "(invalid)"  # what a junk message's unusable terminal is limited as
MAX_TOPIC_LOGGED = 256

NameLookup = Callable[[ClockEvent], str | None]

# What a terminal is told about its swipe (redeliveries are duplicates to a person).
FEEDBACK_STATUS = {
    EventStatus.ACCEPTED: "accepted",
    EventStatus.UNMAPPED: "unmapped",
    EventStatus.DUPLICATE: "duplicate",
    EventStatus.REDELIVERED: "duplicate",
    EventStatus.REJECTED: "rejected",
    EventStatus.HELD: "held",  # an implausible device time: waits for an operator
}


class _Written(NamedTuple):
    """A batch written in the store's open transaction, waiting for its commit."""

    messages: Sequence[aiomqtt.Message]
    results: list[Stored]
    stored: Awaitable[None]


class Ingest:
    def __init__(
        self,
        *,
        config: MqttConfig,
        store: DaemonStore,
        resolve: PersonResolver,
        site_tz: ZoneInfo,
        group_of: GroupResolver | None = None,
        max_batch: int,
        feedback: Feedback,
        metrics: Metrics,
        max_clock_skew_seconds: float = 300.0,
        name_of: NameLookup = lambda _event: None,
        time_limits: TimeLimits | None = None,
        junk: JunkLimiter | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._resolve = resolve
        self._group_of = group_of  # the person's schedule group, for inference
        self._max_batch = max_batch
        self._router = Router(
            config.subscriptions, site_tz=site_tz, time_limits=time_limits or TimeLimits()
        )
        self._junk = junk or JunkLimiter(per_terminal=60, total=600)
        self._parse_failure_logged = float("-inf")
        # What became of every message since start: stored (an event, also a duplicate),
        # rejected (kept for inspection), not_kept (junk beyond the limits), ignored.
        self.counts: collections.Counter[str] = collections.Counter()
        self.connected = asyncio.Event()
        self.disconnected_since: float | None = time.time()
        self.last_error: str | None = None
        self.skew = ClockSkewWatch(max_skew_seconds=max_clock_skew_seconds)
        self._metrics = metrics
        self._name_of = name_of
        self.feedback = feedback  # shared with the dispatchers' delivery replies
        self._takeover = TakeoverWatch()
        # Taken from the broker, not acknowledged yet (their commit is pending).
        self._unacknowledged = 0
        self._acknowledged = asyncio.Event()

    async def run(self) -> None:
        """Connect, consume, and reconnect forever with capped backoff; minutes apart when
        another client holds our client id (bridge.ingest.takeover)."""
        delay = 1.0
        reported = False  # one line per outage, not one per attempt
        while True:
            pause = None
            try:
                # As many unacknowledged messages as the read gate lets wait (flow.py).
                async with connected(self._config, receive_maximum=2 * self._max_batch) as client:
                    self._takeover.accepted()
                    await self._serve(client)
            except StoreWriteError as err:
                # Nothing of the batch was acknowledged: drop the connection so the broker keeps
                # (and later redelivers) every message, and try again once writes work.
                self._takeover.dropped_by_us()
                self._lost(f"database: {err}")
                # The error says it all: no traceback for an expected failure.
                log.error("store.write_failed", error=str(err), retry_in=delay)  # noqa: TRY400
            except aiomqtt.MqttError as err:
                if self._mqtt_failed(err, delay=delay, reported=reported):
                    delay = 1.0  # it was connected: reconnect at once, as after any drop
                reported = True
                pause = self._takeover.backoff if self._takeover.in_spell else None
            else:
                return
            await asyncio.sleep(delay if pause is None else pause)
            delay = min(delay * 2, self._config.reconnect_max_seconds)

    def _mqtt_failed(self, err: aiomqtt.MqttError, *, delay: float, reported: bool) -> bool:
        """Log a lost connection or a failed attempt (once per outage, once per takeover
        spell); True when the broker had accepted the connection."""
        lived = self._takeover.lived()
        self._lost(str(err))
        taken = self._takeover.lost()
        if taken is not None:
            self.last_error = f"client id {self._config.client_id} taken by another client"
            if taken.first:
                log.error(
                    "mqtt.client_id_taken",
                    client_id=self._config.client_id,
                    hint=HINT,
                    # what was seen: the broker closed this many connections in a row, each
                    # within that many seconds of accepting it
                    drops=taken.drops,
                    within_seconds=self._takeover.short_lived_seconds,
                    retry_in=taken.backoff,
                )
            else:
                log.debug("mqtt.retry", error=str(err), retry_in=taken.backoff)
        elif lived is not None:
            log.warning("mqtt.disconnected", error=str(err), connected_seconds=round(lived, 1))
        elif not reported:
            log.warning("mqtt.unreachable", error=str(err), host=self._config.host)
        else:
            log.debug("mqtt.retry", error=str(err), retry_in=delay)
        return lived is not None

    async def _serve(self, client: aiomqtt.Client) -> None:
        for subscription in self._config.subscriptions:
            await client.subscribe(subscription.topic, qos=1)
        await client.publish(self._config.status_topic, ONLINE, qos=1, retain=True)
        raise_lost_cancellation()  # a stop asked for while connecting must not be missed
        self.connected.set()
        self.disconnected_since = None
        self._metrics.mqtt_connected.set(1)
        log.info("mqtt.connected", host=self._config.host, port=self._config.port)
        try:
            stored: asyncio.Queue[_Written] = asyncio.Queue()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.feedback.publish_forever(client), name="feedback")
                tasks.create_task(self._client_id_settled(), name="mqtt.client_id_watch")
                tasks.create_task(self._acknowledge_stored(client, stored), name="mqtt.acks")
                await self._consume(client, stored)
        except BaseExceptionGroup as group:
            # Surface the first real cause (an MqttError, a store failure) to run()'s handlers.
            raise group.exceptions[0] from None
        except asyncio.CancelledError:
            # A clean stop: say so now, rather than leaving it to the last will.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    client.publish(self._config.status_topic, OFFLINE, qos=1, retain=True), 1.0
                )
            self._lost("stopped")
            raise

    async def _client_id_settled(self) -> None:
        """A connection that lives ends a takeover spell: say once that the id is ours again."""
        await asyncio.sleep(self._takeover.short_lived_seconds)
        if self._takeover.settled():
            log.info("mqtt.client_id_free", client_id=self._config.client_id)

    def _lost(self, reason: str) -> None:
        self.last_error = reason
        self.connected.clear()
        self.disconnected_since = self.disconnected_since or time.time()
        self._metrics.mqtt_connected.set(0)

    async def _consume(self, client: aiomqtt.Client, written: asyncio.Queue[_Written]) -> None:
        # Room for the batch being stored and a full one behind it; no more waits in memory.
        # Installed only now: a pause before this loop runs would never end, and until the
        # first acknowledgement the broker does hold its in-flight limit.
        gate = ReadGate(client, high=2 * self._max_batch, low=self._max_batch)
        gate.install()
        messages = client.messages
        self._unacknowledged = 0  # a dropped connection's batches are the broker's again
        while True:
            batch = [await anext(messages)]
            # Group commit: whatever else has already arrived joins this batch, and the batch
            # joins the store's open transaction (store.commit_wait_seconds).
            while len(messages) and len(batch) < self._max_batch:
                batch.append(await anext(messages))
            gate.resume_if_drained()
            results, stored = await self.store_batch_now(batch)
            written.put_nowait(_Written(batch, results, stored))
            self._unacknowledged += len(batch)
            # What waits for its commit is bounded too: at max_batch, commit now and wait.
            if self._unacknowledged >= self._max_batch:
                self._store.commit_soon()
                while self._unacknowledged >= self._max_batch:
                    self._acknowledged.clear()
                    await self._acknowledged.wait()

    async def _acknowledge_stored(
        self, client: aiomqtt.Client, written: asyncio.Queue[_Written]
    ) -> None:
        """PUBACK each batch, in arrival order, once its transaction is committed. A commit
        that fails raises StoreWriteError here: the connection is dropped with nothing of it
        acknowledged, and the broker sends it all again."""
        while True:
            batch = await written.get()
            await batch.stored
            for message in batch.messages:
                acknowledge(client, message)
            self._unacknowledged -= len(batch.messages)
            self._acknowledged.set()
            _log_results(batch.results)

    async def store_batch(self, batch: Sequence[aiomqtt.Message]) -> list[Stored]:
        """Parse and store one batch of messages; what became of each one that is stored or
        rejected, in arrival order, once committed. Raises nothing but StoreWriteError (the
        database itself failed: acknowledge nothing). Every message ends counted in exactly one
        of `self.counts`' stored, rejected, not_kept or ignored."""
        results, stored = await self.store_batch_now(batch)
        await stored
        return results

    async def store_batch_now(
        self, batch: Sequence[aiomqtt.Message]
    ) -> tuple[list[Stored], Awaitable[None]]:
        """As `store_batch`, but with the results as soon as they are decided (the terminals
        are told then) and what completes once they are committed (the PUBACK waits for it)."""
        received_at = datetime.now(UTC)
        items = [
            item
            for item in (self._parse_safely(message, received_at) for message in batch)
            if item is not None
        ]
        results, stored = await self._store.ingest_now(
            items, resolve=self._resolve, received_at=received_at, group_of=self._group_of
        )
        self._count(items, results)
        self._tell_terminals(items, results)
        return results, stored

    def _count(self, items: Sequence[Incoming | Rejection], results: Sequence[Stored]) -> None:
        label = self._metrics.terminal_label
        for item, stored in zip(items, results, strict=True):
            terminal = item.terminal if isinstance(item, Rejection) else item.event.terminal
            self._metrics.events.labels(label(terminal), item.format, stored.status).inc()
            if stored.status is EventStatus.HELD and isinstance(item, Incoming) and item.held:
                self._metrics.held_for_time.labels(item.held.problem.value).inc()
            self.counts["rejected" if stored.status == "rejected" else "stored"] += 1
            for sink in stored.held:
                self._metrics.held.labels(sink, "direction").inc()

    def _tell_terminals(
        self, items: Sequence[Incoming | Rejection], results: Sequence[Stored]
    ) -> None:
        if not self.feedback.enabled:
            return
        for item, stored in zip(items, results, strict=True):
            if isinstance(item, Rejection):
                # A refused swipe is named by the id its payload carries, if a usable one.
                event, terminal, source_id = None, item.terminal, payload_id(item.payload)
            else:
                event = item.event
                terminal, source_id = event.terminal, event.source_id
            if not terminal:  # a junk topic level: there is no one to answer
                continue
            self.feedback.send(
                terminal,
                {
                    "id": source_id,
                    "status": FEEDBACK_STATUS[stored.status],
                    "person": None if event is None else self._name_of(event),
                    "action": stored.action.value if stored.action else None,
                    "reason": stored.reason,
                },
            )

    def _parse_safely(
        self, message: aiomqtt.Message, received_at: datetime
    ) -> Incoming | Rejection | None:
        """`_parse`, but a message that makes it fail in a way nobody foresaw is rejected
        (and kept) like any other bad payload, rather than stopping ingest for everyone."""
        try:
            item = self._parse(message, received_at)
        except Exception as err:
            now = time.monotonic()
            if now - self._parse_failure_logged >= 60.0:  # a traceback a minute is plenty
                self._parse_failure_logged = now
                log.exception("ingest.parse_failed", topic=message.topic.value[:MAX_TOPIC_LOGGED])
            item = rejection(
                message.topic.value,
                _payload_bytes(message),
                fmt="unknown",
                reason=f"could not be read ({type(err).__name__}: {str(err)[:200]})",
                received_at=received_at,
            )
        if item is None:  # not a clock event (another sensor of a Tasmota device)
            self.counts["ignored"] += 1
            return None
        # A rejected message and an event held for its implausible time share one budget: a
        # terminal whose clock says 2099 must not grow the database faster than junk can.
        terminal = _junk_terminal(item)
        if terminal is not None and not self._junk.keep(terminal):
            self.counts["not_kept"] += 1
            self._metrics.rejected_not_kept.inc()
            self._metrics.events.labels(
                self._metrics.terminal_label(terminal), item.format, "not_kept"
            ).inc()
            return None
        return item

    def _parse(
        self, message: aiomqtt.Message, received_at: datetime
    ) -> Incoming | Rejection | None:
        item = self._router.route(
            message.topic.value, _payload_bytes(message), received_at=received_at
        )
        if isinstance(item, Incoming):
            event = item.event
            if event.time_warning:
                log.warning(
                    "event.time_adjusted", terminal=event.terminal, warning=event.time_warning
                )
            # The message is counted under its label once, when it is stored (_count).
            label = self._metrics.terminal_label(event.terminal, count=False)
            if self.skew.check(event, received_at=received_at, terminal=label):
                self._metrics.clock_skew.labels(label).inc()
        return item


def _junk_terminal(item: Incoming | Rejection) -> str | None:
    """The terminal whose junk budget the message uses, or None: a plausible event."""
    if isinstance(item, Rejection):
        return item.terminal or INVALID_TERMINAL
    return item.event.terminal if item.held is not None else None


def _payload_bytes(message: aiomqtt.Message) -> bytes:
    raw = message.payload
    return bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw or "").encode()


def _log_results(results: Sequence[Stored]) -> None:
    """One line per message: what became of it."""
    for stored in results:
        fields = {"event_key": stored.key, "terminal": stored.terminal}
        if stored.status is EventStatus.REJECTED:
            log.warning("event.rejected", reason=stored.reason)
        elif stored.status in (EventStatus.DUPLICATE, EventStatus.REDELIVERED):
            log.info("event.duplicate", **fields, action=stored.action, reason=stored.status)
        elif stored.status is EventStatus.HELD:
            log.warning("event.held", **fields, reason=stored.reason)
        elif stored.held:
            log.warning("event.held", **fields, action=stored.action, reason=stored.reason)
        elif stored.status is EventStatus.UNMAPPED:
            log.warning("event.unmapped", **fields, action=stored.action)
        else:
            log.info("event.stored", **fields, action=stored.action)
