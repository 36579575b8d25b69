"""Feedback to terminals: "Good morning, Ana: clocked in" needs to know what became of a swipe.

Feedback is best effort and never holds up ingest: messages wait in a bounded queue and a
publisher task sends them on the current connection. When the queue is full (a kiosk flood, the
broker gone) the oldest feedback is dropped and counted; the events themselves are safe in SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import aiomqtt
import structlog

log = structlog.get_logger("bridge.feedback")

QUEUE_LIMIT = 10_000


class Feedback:
    def __init__(self, *, ack_topic: str | None):
        self._topic = ack_topic
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self._topic is not None

    def send(self, terminal: str, message: Mapping[str, Any]) -> None:
        if self._topic is None or not terminal:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        topic = self._topic.format(terminal=terminal)
        self._queue.put_nowait((topic, json.dumps(message, separators=(",", ":")).encode()))

    async def publish_forever(self, client: aiomqtt.Client) -> None:
        """Runs for one connection; what it had not sent waits for the next one."""
        while True:
            topic, payload = await self._queue.get()
            try:
                await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError:
                with contextlib.suppress(asyncio.QueueFull):  # keep it for the next connection
                    self._queue.put_nowait((topic, payload))
                raise
            _reraise_swallowed_cancel()


def _reraise_swallowed_cancel() -> None:
    """On Python 3.11, asyncio.wait_for (inside aiomqtt's publish) loses a cancellation that
    arrives as the awaited PUBACK does (CPython gh-86296, fixed in 3.12); this loop would then
    wait on its queue for ever and hold up the bridge's stop. A task still running while asked
    to cancel can only have lost it: raise it again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
