"""Back-pressure on the broker: stop reading its socket while too many messages wait to be stored.

The broker is meant to send a client at most `max_inflight_messages` unacknowledged QoS 1
messages, and the bridge acknowledges a message only once it is committed, so that limit should
bound what waits in memory. mosquitto 2.0.11 (Debian 12's) stops counting once a persistent
session has resumed and acknowledgements flow: measured here, acknowledging 1 message released
100 more, and acknowledging 50 released the whole queue. After a weekend offline the bridge would
take the broker's entire backlog into memory (about 450 bytes a message: 100,000 queued events
raised its RSS from 64 to 111 MiB) before storing any of it. While the read pauses, TCP's own flow
control keeps the rest at the broker, whose persistence is where it belongs.
"""

from __future__ import annotations

import asyncio

import aiomqtt


class ReadGate:
    """Reads the broker's socket in place of aiomqtt's reader, pausing at `high` messages waiting
    in the client's queue and resuming once the consumer has brought them down to `low`.

    A pause lasts as long as one or two store commits. The keepalive is not at risk: paho pings
    only after `keepalive` seconds without traffic, and a broken connection shows as soon as
    reading resumes."""

    def __init__(self, client: aiomqtt.Client, *, high: int, low: int):
        if not 0 <= low < high:
            msg = f"need 0 <= low < high, got low={low}, high={high}"
            raise ValueError(msg)
        self._client = client
        self._high = high
        self._low = low
        self._loop = asyncio.get_running_loop()
        self._sock: object | None = None
        self._fd = -1
        self.paused = False
        self.pauses = 0

    def install(self) -> None:
        """Take over reading from aiomqtt's reader (call once connected: aiomqtt adds its
        reader when the socket opens, before the CONNACK is read)."""
        sock = self._client._client.socket()
        if sock is None:
            return
        self._sock, self._fd = sock, sock.fileno()
        self._loop.remove_reader(self._fd)
        self._loop.add_reader(self._fd, self._read)

    def resume_if_drained(self) -> None:
        """Call after taking messages off the queue."""
        if self.paused and len(self._client.messages) <= self._low:
            self.paused = False
            if self._still_open():
                self._loop.add_reader(self._fd, self._read)
                # A TLS socket may hold decrypted bytes that epoll cannot see: read once now.
                self._loop.call_soon(self._read)

    def _read(self) -> None:
        if self.paused:
            return
        paho = self._client._client
        try:
            # As aiomqtt's own reader: loop_read leaves decrypted TLS bytes behind (paho #131).
            paho.loop_read()
            while getattr(paho._sock, "pending", lambda: 0)() > 0:
                paho.loop_read()
        except Exception as exc:  # the connection broke: aiomqtt raises it to its users
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)
            return
        if len(self._client.messages) >= self._high and self._still_open():
            self.paused = True
            self.pauses += 1
            self._loop.remove_reader(self._fd)

    def _still_open(self) -> bool:
        """Our socket is still paho's: once closed, its number may belong to another socket."""
        sock = self._client._client.socket()
        return sock is not None and sock is self._sock and sock.fileno() == self._fd
