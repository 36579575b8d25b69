"""An embedded MQTT broker for the demo: amqtt (the optional `demo` extra) on a free port.

amqtt is fine for a demo (QoS 1, persistent sessions, manual PUBACK all work against it); a
site runs mosquitto.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

HOST = "127.0.0.1"
MISSING_EXTRA = (
    "the demo needs the 'demo' extra: pip install 'clockin-bridge[demo]' (make demo does this)"
)
_CHATTY = ("amqtt", "transitions")


def amqtt_available() -> bool:
    try:
        import amqtt.broker  # noqa: F401, PLC0415 - only probing that the extra is installed
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def broker_config(port: int) -> dict[str, object]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        # Only anonymous auth: no $SYS publisher, no packet or event logging plugins.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


@asynccontextmanager
async def embedded_broker() -> AsyncIterator[int]:
    """Run an amqtt broker on 127.0.0.1 and yield its port."""
    from amqtt.broker import Broker  # noqa: PLC0415 - imported here: the optional extra

    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    port = free_port()
    broker = Broker(broker_config(port))
    await broker.start()
    try:
        yield port
    finally:
        await broker.shutdown()
