"""Which commits are flushed to the disk (fdatasync), and why the others need not be.

The database is in WAL mode. A commit with `PRAGMA synchronous = FULL` appends its pages to the
WAL and flushes the WAL before COMMIT returns; with NORMAL it appends them and returns (the
pages are in the kernel's cache: a crash of the process, SIGKILL included, loses nothing, a
power cut may). The setting is per connection and is switched between transactions. A
flush of the WAL makes durable every frame before it, and SQLite's recovery after a power cut
keeps a prefix of the WAL's commits (each frame's checksum chains to the one before), so the
disk always holds the database as of some commit no earlier than the last flushed one:
whatever was lost is the newest NORMAL commits, never an older one while a newer survives.
A checkpoint flushes the WAL before copying it, so it too makes every earlier commit durable.

What each write needs:

- **Ingest** (events and their deliveries): FULL. The broker is told PUBACK after it, and then
  forgets the message: a lost ingest would be a lost punch.
- **Claim** for a sink whose vendor answers a resent punch as a duplicate (Go2Clock): NORMAL.
  Lost, the delivery is pending again with its attempt not counted and is sent once more; the
  vendor's duplicate check makes that harmless (delivery layer 3).
- **Claim** for a stateful sink (McTime, TimeTrack): FULL, before the send. Their guard against
  a resend is the attempt counted at claim time: with `attempt > 1` McTime reads GET /clock and
  TimeTrack searches the attendance before acting. A lost claim would resend with attempt 1,
  trusting the person_state of the last settle: a McTime `break` would toggle back, a TimeTrack
  attendance would be created twice.
- **Settle** (the outcome and, for McTime/TimeTrack, the person's new state): NORMAL. A lost
  settle leaves the delivery as its claim left it, 'inflight', and the person's state as before
  that send. At the next start it is pending again and resent with attempt + 1 (the claim was
  durable), so McTime and TimeTrack look at the vendor first and answer duplicate if it already
  holds the punch, writing the state they read; Go2Clock answers duplicate. The person's later
  punches cannot have been sent meanwhile (the claim lets one delivery per person be in flight),
  and any settle they had is later in the WAL, so lost with it.
- **Unclaim, expiry, recovery at start**: NORMAL. Lost, the delivery is 'inflight' or pending
  and goes out again at the next start, as after a kill.
- Everything else (migrations, the directory cache, retention, repairs by commands): FULL.

How much a power cut can cost is bounded: a NORMAL commit is made FULL when the last flushed
commit is more than LAZY_SECONDS old, so the unflushed writes are all from the LAZY_SECONDS after
the last flush: a power cut loses at most that much work, each lost settle one resend answered
as a duplicate. At 10 events a second every ingest flushes what the claims and settles before
it wrote, so a swipe costs one flush. A sink says its resends are harmless with a class
attribute `resend_harmless = True` (bridge.dispatch.pump passes it to the claim); a sink that
does not say so gets its claims flushed.

Writes also wait to share a commit (store.commit_wait_seconds; bridge/store/group_commit.py):
an ingest's transaction stays open for the wait and what comes meanwhile runs in it, and a
write that needs no flush waits for such a window. That changes nothing above: the PUBACK
still follows the flushed commit that holds the message; a claim or settle not committed yet
when the process dies is lost exactly as an unflushed one is lost to a power cut (the delivery
is as its last commit left it and goes out again, with the checks described); and how many can
be lost at once is still bounded by what a dispatcher holds (concurrency + CLAIM_AHEAD: a
delivery stays held until its settle is committed). tests/faults/ (SIGKILL and power cuts at
random points) run with the shipped wait.
"""

from __future__ import annotations

import time

# At most this long of claims and settles may be lost to a power cut (each one resent). Longer
# than dispatch.settle_seconds (default 2 s): a swipe's claim comes that long after its ingest's
# flush, and with 1 s it would pay a flush of its own whenever swipes come more than 1 s apart.
LAZY_SECONDS = 5.0


class FlushPolicy:
    """Decides, per transaction, FULL or NORMAL (see the module docstring)."""

    def __init__(self, *, lazy_seconds: float = LAZY_SECONDS) -> None:
        self._lazy_seconds = lazy_seconds
        self._last_flush = float("-inf")  # time.monotonic() of the last flushed commit

    def synchronous(self, *, durable: bool) -> str:
        """The PRAGMA synchronous value for a transaction; `durable`: one of its writes needs
        the flush."""
        stale = time.monotonic() - self._last_flush > self._lazy_seconds
        return "FULL" if durable or stale else "NORMAL"

    def committed(self, synchronous: str, *, began: float) -> None:
        """A transaction committed with `synchronous`, begun at time.monotonic() `began`."""
        if synchronous == "FULL":
            self._last_flush = max(self._last_flush, began)
