"""The one adapter over aiomqtt's and paho's internals: every reach past their public API is here.

aiomqtt 2.5.1 has no public manual acknowledgement, no flow control and no publish that does not
wait for its PUBACK (aiomqtt#345, draft PR #346; aiomqtt 3 drops paho and adds `puback()` and
`receive_max`, still alpha). So this module talks to the paho client inside aiomqtt's
(`client._client`, whose `manual_ack_set`, `ack` and `publish` are public paho 2.1+ API) and
takes over aiomqtt's socket reader. aiomqtt and paho-mqtt are pinned exactly in pyproject.toml:
a release that moves these internals must not arrive unannounced. Nothing else in the bridge
touches `_client`, paho, or the socket.

Back-pressure (ReadGate): the broker is meant to send a client at most `max_inflight_messages`
unacknowledged QoS 1 messages, and the bridge acknowledges a message only once it is committed,
so that limit should bound what waits in memory. mosquitto 2.0.11 (Debian 12's) stops counting
once a persistent session has resumed and acknowledgements flow: measured here, acknowledging 1
message released 100 more, and acknowledging 50 released the whole queue. After a weekend offline
the bridge would take the broker's entire backlog into memory (about 450 bytes a message: 100,000
queued events raised its RSS from 64 to 111 MiB) before storing any of it. While the read pauses,
TCP's own flow control keeps the rest at the broker, whose persistence is where it belongs.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiomqtt
import paho.mqtt.client as paho_mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# ruff: noqa: SLF001 -- reaching into aiomqtt's paho client is what this module is for


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Acknowledge QoS 1 messages only when told to (`acknowledge`).

    aiomqtt 2.5 acknowledges a QoS 1 message as soon as it reaches its in-memory queue, which
    would lose it in a crash before the commit; paho's manual ack (aiomqtt issue 345) fixes that.
    """
    client._client.manual_ack_set(on=True)


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK for a message whose event is committed. On a connection that has since
    dropped this does nothing, and the broker redelivers (which the store recognises)."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


class Unacknowledged(Protocol):
    """A QoS 1 PUBLISH handed to paho: `is_published()` once the broker's PUBACK is in."""

    def is_published(self) -> bool: ...


def publish_unawaited(client: aiomqtt.Client, topic: str, payload: bytes) -> Unacknowledged:
    """Hand a QoS 1 PUBLISH to paho, which runs the exchange with the broker, without waiting
    for its PUBACK (aiomqtt has no publish that does not wait). Raises ValueError when paho
    refuses the topic, and aiomqtt.MqttError when paho could not queue it (no connection)."""
    info = client._client.publish(topic, payload, qos=1)
    if info.rc != paho_mqtt.MQTT_ERR_SUCCESS:
        raise aiomqtt.MqttError(paho_mqtt.error_string(info.rc))
    return info


class ReadGate:
    """Reads the broker's socket in place of aiomqtt's reader, pausing at `high` messages waiting
    in the client's queue and resuming once the consumer has brought them down to `low`.

    A pause lasts as long as one or two store commits. The keepalive is not at risk: paho pings
    only after `keepalive` seconds without traffic, and a broken connection shows as soon as
    reading resumes."""

    def __init__(self, client: aiomqtt.Client, *, high: int, low: int) -> None:
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
        # Whatever paho raised, the connection broke: aiomqtt raises it to its users.
        except Exception as exc:  # noqa: BLE001
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


def connect_properties(*, session_expiry_seconds: int, receive_maximum: int) -> Properties:
    """The MQTT 5 CONNECT properties of the bridge's session (paho's untyped Properties)."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_seconds
    properties.ReceiveMaximum = receive_maximum
    return properties
