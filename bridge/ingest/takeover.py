"""Another client with our client id: told apart by the connections the broker keeps closing.

When a client connects with a client id already connected, the broker closes the older
connection (MQTT 3.1.1 §3.1.4). Two clients that both reconnect at once, say two bridges with
the same `mqtt.client_id`, then knock each other off for ever: 17 times in 35 s in issue 13, with
nothing in the log but "Disconnected during message iteration".

How the broker says so: MQTT 5 has DISCONNECT 0x8E "Session taken over", MQTT 3.1.1 nothing.
mosquitto 2.0.11 (Debian 12's) sends that DISCONNECT to neither: measured with a raw MQTT 5
client (session expiry set), the old connection is closed with no packet at all, exactly as for
3.1.1. Moving to MQTT 5 would buy no reason code from that broker and would put the persistent
session at risk (a v5 CONNECT needs clean start off and a session expiry, or the broker drops
the queue at disconnect), so the bridge stays on 3.1.1 and infers:

    the broker closed a connection it had accepted less than SHORT_LIVED_SECONDS before,
    DROPS_IN_A_ROW times in a row, and every reconnection in between was accepted at once.

A broker that restarts refuses connections while it is down, which ends the streak; the one case
this pattern cannot tell from a taken client id is a broker that crashes within seconds of
every start, five times running (the log line says what was seen). Then the bridge waits
minutes (BACKOFF_FIRST_SECONDS, doubling up to BACKOFF_MAX_SECONDS) before each reconnection
instead of one second: it takes the id back once per wait, not once per second, and the other
client's owner has an error line naming the id. The spell ends once a connection lives
SHORT_LIVED_SECONDS.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

SHORT_LIVED_SECONDS = 30.0
DROPS_IN_A_ROW = 5
BACKOFF_FIRST_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 300.0

HINT = "another client uses this client id; each bridge needs its own mqtt.client_id"


@dataclasses.dataclass(frozen=True, slots=True)
class Taken:
    """Our client id looks taken: wait `backoff` seconds before connecting again."""

    backoff: float
    first: bool  # the first drop of this spell judged so: the one to log as an error
    drops: int  # short-lived connections in a row so far


class TakeoverWatch:
    """Fed with what became of each connection attempt; says when our client id looks taken.

    Read its settings from the module constants when built, so a test can shorten them."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.short_lived_seconds = SHORT_LIVED_SECONDS
        self._drops_in_a_row = DROPS_IN_A_ROW
        self._backoff_first = BACKOFF_FIRST_SECONDS
        self._backoff_max = BACKOFF_MAX_SECONDS
        self._clock = clock
        self._accepted_at: float | None = None
        self._drops = 0
        self._backoff = 0.0  # the last wait of this spell; 0: no spell

    @property
    def in_spell(self) -> bool:
        return self._backoff > 0

    @property
    def backoff(self) -> float:
        """The wait before the next connection while in a spell; 0 otherwise."""
        return self._backoff

    def accepted(self) -> None:
        """The broker accepted a connection (CONNACK)."""
        self._accepted_at = self._clock()

    def lived(self) -> float | None:
        """How long the current connection has lived, or None when none was accepted."""
        return None if self._accepted_at is None else self._clock() - self._accepted_at

    def lost(self) -> Taken | None:
        """A connection attempt ended in an MQTT error: Taken when our id looks taken."""
        lived = self.lived()
        self._accepted_at = None
        if lived is None or lived >= self.short_lived_seconds:
            self._end()  # the broker was unreachable, or the connection lived: no takeover
            return None
        self._drops += 1
        if self._drops < self._drops_in_a_row:
            return None
        first = not self.in_spell
        self._backoff = self._backoff_first if first else min(self._backoff * 2, self._backoff_max)
        return Taken(backoff=self._backoff, first=first, drops=self._drops)

    def dropped_by_us(self) -> None:
        """We closed the connection ourselves (a failed write): that says nothing either way."""
        self._accepted_at = None
        self._drops = 0

    def settled(self) -> bool:
        """Call once a connection has lived `short_lived_seconds`: ends a spell; True if one
        was on (to say the client id is ours again)."""
        was = self.in_spell
        self._end()
        return was

    def _end(self) -> None:
        self._drops = 0
        self._backoff = 0.0
