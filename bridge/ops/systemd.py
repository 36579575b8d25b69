"""The systemd notify protocol: a few datagrams on the socket named by $NOTIFY_SOCKET.

READY=1 once the database is open and the broker connected, WATCHDOG=1 from the event loop
(so a wedged loop misses its pings and systemd restarts the service), STOPPING=1 on shutdown.
Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket


def _address(value: str) -> str:
    # A leading '@' names a socket in the abstract namespace.
    return "\0" + value[1:] if value.startswith("@") else value


def notify(message: str) -> bool:
    """Send one notification; True when it was sent."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(_address(target))
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd set for this process, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


async def watchdog_pings(interval: float) -> None:
    """Ping from the event loop itself: if the loop wedges, the pings stop."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
