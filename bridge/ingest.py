"""MQTT ingest: the only module that imports aiomqtt.

Messages are stored first and acknowledged after: the PUBACK for a QoS 1 message goes out only
once the SQLite transaction holding it has committed, in arrival order. Until then the broker
keeps the message and redelivers it when the bridge reconnects.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiomqtt
import structlog

from bridge.config import MqttConfig, Subscription
from bridge.events import PayloadError, parse_event, terminal_from_topic
from bridge.metrics import Metrics
from bridge.skew import ClockSkewWatch
from bridge.store import Incoming, PersonResolver, Rejection, Store, Stored, StoreWriteError

log = structlog.get_logger("bridge.ingest")

StoredCallback = Callable[[Sequence[Stored]], Awaitable[None]]


def new_client(config: MqttConfig, *, tls_context: ssl.SSLContext | None = None) -> aiomqtt.Client:
    """A client with a persistent session and manual acknowledgement.

    aiomqtt 2.5 acknowledges a QoS 1 message as soon as it reaches its in-memory queue, which
    would lose it in a crash before the commit; paho's manual ack (aiomqtt issue 345) fixes that.
    """
    client = aiomqtt.Client(
        hostname=config.host,
        port=config.port,
        identifier=config.client_id,
        clean_session=False,
        keepalive=config.keepalive,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        tls_context=tls_context,
    )
    client._client.manual_ack_set(True)  # noqa: SLF001 - the one place we reach into paho
    return client


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK for a message whose event is committed. On a connection that has since
    dropped this does nothing, and the broker redelivers (which the store recognises)."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)  # noqa: SLF001


@dataclass(frozen=True, slots=True)
class _Route:
    subscription: Subscription

    def matches(self, message: aiomqtt.Message) -> bool:
        return message.topic.matches(self.subscription.topic)


class Ingest:
    def __init__(
        self,
        *,
        config: MqttConfig,
        store: Store,
        resolve: PersonResolver,
        site_tz: ZoneInfo,
        max_batch: int,
        on_stored: StoredCallback,
        metrics: Metrics,
        max_clock_skew_seconds: float = 300.0,
    ):
        self._config = config
        self._store = store
        self._resolve = resolve
        self._site_tz = site_tz
        self._max_batch = max_batch
        self._on_stored = on_stored
        self._routes = [_Route(sub) for sub in config.subscriptions]
        self.connected = asyncio.Event()
        self.disconnected_since: float | None = time.time()
        self.last_error: str | None = None
        self.skew = ClockSkewWatch(max_skew_seconds=max_clock_skew_seconds)
        self._metrics = metrics

    async def run(self) -> None:
        """Connect, consume, and reconnect forever with capped backoff."""
        delay = 1.0
        failing_since: str | None = None
        while True:
            try:
                async with new_client(self._config) as client:
                    for route in self._routes:
                        await client.subscribe(route.subscription.topic, qos=1)
                    self.connected.set()
                    self.disconnected_since = None
                    self._metrics.mqtt_connected.set(1)
                    delay = 1.0
                    failing_since = None
                    log.info("mqtt.connected", host=self._config.host, port=self._config.port)
                    await self._consume(client)
            except StoreWriteError as err:
                # Nothing of the batch was acknowledged: drop the connection so the broker keeps
                # (and later redelivers) every message, and try again once writes work.
                self._metrics.mqtt_connected.set(0)
                self.connected.clear()
                self.disconnected_since = self.disconnected_since or time.time()
                self.last_error = f"database: {err}"
                log.error("store.write_failed", error=str(err), retry_in=delay)
            except aiomqtt.MqttError as err:
                reason = str(err)
                self.last_error = reason
                if self.disconnected_since is None:
                    self.disconnected_since = time.time()
                self._metrics.mqtt_connected.set(0)
                if self.connected.is_set():
                    self.connected.clear()
                    log.warning("mqtt.disconnected", error=reason)
                elif failing_since is None:
                    log.warning("mqtt.unreachable", error=reason, host=self._config.host)
                else:
                    log.debug("mqtt.retry", error=reason, retry_in=delay)
                failing_since = failing_since or reason
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._config.reconnect_max_seconds)

    async def _consume(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        while True:
            batch = [await anext(messages)]
            # Group commit: whatever else has already arrived joins this transaction.
            while len(messages) and len(batch) < self._max_batch:
                batch.append(await anext(messages))
            parsed = [self._parse(message) for message in batch]
            items = [item for item in parsed if item is not None]
            results = await self._store.ingest(
                items, resolve=self._resolve, received_at=datetime.now(UTC)
            )
            for message in batch:
                acknowledge(client, message)
            self._count(items, results)
            await self._on_stored(results)

    def _count(self, items: Sequence[Incoming | Rejection], results: Sequence[Stored]) -> None:
        for item, stored in zip(items, results, strict=True):
            if isinstance(item, Rejection):
                self._metrics.events.labels(item.terminal, item.format, "rejected").inc()
            else:
                terminal = item.event.terminal
                self._metrics.events.labels(terminal, item.format, stored.status).inc()

    def _parse(self, message: aiomqtt.Message) -> Incoming | Rejection | None:
        received_at = datetime.now(UTC)
        topic = message.topic.value
        raw = message.payload
        payload = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw or "").encode()
        route = next((r for r in self._routes if r.matches(message)), None)
        if route is None:  # the broker sent a topic we did not ask for
            return Rejection(
                topic, "unknown", payload, "no subscription matches", received_at, topic
            )
        fmt = route.subscription.format
        try:
            event = parse_event(
                topic,
                payload,
                fmt,
                pattern=route.subscription.topic,
                site_tz=self._site_tz,
                received_at=received_at,
            )
        except PayloadError as err:
            terminal = terminal_from_topic(route.subscription.topic, topic)
            return Rejection(topic, fmt.value, payload, str(err), received_at, terminal)
        if event is None:
            return None
        if event.time_warning:
            log.warning("event.time_adjusted", terminal=event.terminal, warning=event.time_warning)
        if self.skew.check(event, received_at=received_at):
            self._metrics.clock_skew.labels(event.terminal).inc()
        routed = route.subscription.sinks
        sinks = None if routed is None else frozenset(routed)
        return Incoming(event, topic, sinks, fmt.value)
