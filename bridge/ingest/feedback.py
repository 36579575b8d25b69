"""Feedback to terminals: "Good morning, Ana: clocked in" needs to know what became of a swipe.

Feedback is best effort and never holds up ingest: messages wait in a bounded queue and a
publisher task sends them on the current connection. When the queue is full (a kiosk flood, the
broker gone) the oldest feedback is dropped and counted; the events themselves are safe in SQLite.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import aiomqtt
import structlog

from bridge.events import terminal_problem
from bridge.ingest.mqtt import Unacknowledged, publish_unawaited

log = structlog.get_logger("bridge.feedback")

QUEUE_LIMIT = 10_000
WINDOW = 100  # replies handed to paho and not yet acknowledged by the broker
WINDOW_POLL_SECONDS = 0.005


class Feedback:
    def __init__(self, *, ack_topic: str | None) -> None:
        self._topic = ack_topic
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self._topic is not None

    def send(self, terminal: str, message: Mapping[str, Any]) -> None:
        # A terminal id with '/', '+' or '#' would make another terminal's topic, or no valid
        # topic at all: such an id never gets this far (bridge.events.check_terminal), and is
        # refused again here, where the topic is built.
        if self._topic is None or terminal_problem(terminal) is not None:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        topic = self._topic.format(terminal=terminal)
        self._queue.put_nowait((topic, json.dumps(message, separators=(",", ":")).encode()))

    async def publish_forever(self, client: aiomqtt.Client) -> None:
        """Runs for one connection; what it had not handed over waits for the next one.

        Each reply goes straight to paho, which runs the QoS 1 exchange with the broker:
        awaiting every PUBACK in turn through aiomqtt's publish cost more CPU than the rest of
        a swipe's ingest at 500 swipes/s (bench/latency.py). At most WINDOW replies are
        unacknowledged at a time, so a slow broker makes the queue here wait (bounded, oldest
        dropped) instead of paho's, which is unbounded and rescanned on every PUBACK. A reply
        still unacknowledged when the connection drops is lost with it: feedback is best
        effort.
        """
        unacknowledged: collections.deque[Unacknowledged] = collections.deque()
        while True:
            topic, payload = await self._queue.get()
            _forget_acknowledged(unacknowledged)
            while len(unacknowledged) >= WINDOW:  # only while the broker falls behind
                await asyncio.sleep(WINDOW_POLL_SECONDS)
                _forget_acknowledged(unacknowledged)
            try:
                info = publish_unawaited(client, topic, payload)
            except ValueError as err:  # paho refuses the topic: that reply alone is lost
                log.warning("feedback.refused", topic=topic[:200], error=str(err))
                continue
            except aiomqtt.MqttError as err:
                with contextlib.suppress(asyncio.QueueFull):  # keep it for the next connection
                    self._queue.put_nowait((topic, payload))
                msg = f"feedback not published: {err}"
                raise aiomqtt.MqttError(msg) from None
            unacknowledged.append(info)


def _forget_acknowledged(unacknowledged: collections.deque[Unacknowledged]) -> None:
    while unacknowledged and unacknowledged[0].is_published():
        unacknowledged.popleft()
