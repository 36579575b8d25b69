"""Group commit: many writes, one transaction and one flush.

Each commit waits for an fsync (synchronous=FULL) and writes one WAL frame per page it touches,
whatever it holds: the number of commits, not of rows, sets what a swipe costs the disk. So:

- A write asked for while the writer is busy joins the next transaction (under load a batch
  grows until it keeps up).
- An ingest (urgent: it needs the flush) opens a *window*: it is run at once,
  and the transaction stays open for `window_seconds`; every write asked for meanwhile is run
  in it at once too, and all are committed together at the end. A caller may read its answer
  as soon as its write has run (`Submitted.ran`: the ingest's decisions, for the terminal's
  feedback) and learns that it is durable from `Submitted.committed` (the broker's PUBACK
  waits for that).
- A write that needs no flush (a claim for a resend-harmless sink, a settle) does not open a
  window: it waits up to `linger_seconds` for one (or until `linger_max` such writes have
  gathered), and is then committed in a plain transaction of its own.

`linger_max` stays well below what a dispatcher holds at once (concurrency + CLAIM_AHEAD, at
least 33): a dispatcher whose every held delivery waits for its settle claims nothing new, so
if that many could never make a batch each would wait out the whole linger (measured with 64:
a backlog drained at 37 a second). For the same reason an open window is committed early once
`linger_max` claims and settles wait in it (without that, live swipes at 50/s to a 20 ms
vendor were delivered at 31/s: one dispatcher's worth per window).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass(eq=False)
class Submitted(Generic[Answer]):
    """One write: `ran` resolves once it has run (uncommitted), `committed` once its
    transaction is committed (or with the error that stopped the commit)."""

    ran: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    committed: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit(Generic[Item, Answer]):
    def __init__(
        self,
        *,
        begin: Callable[[list[Item], bool], Awaitable[list[Answer]]],
        run: Callable[[list[Item]], Awaitable[list[Answer]]],
        commit: Callable[[], Awaitable[None]],
        lock: asyncio.Lock | None = None,
        urgent: Callable[[Item], bool] = lambda _item: True,
        opens_window: Callable[[Item], bool] = lambda _item: True,
        window_seconds: float = 0.0,
        linger_seconds: float = 0.0,
        linger_max: int = 16,
    ) -> None:
        """`begin(items, durable)` opens a transaction (flushed at commit when `durable`) and
        runs the items in it; `run(items)` runs more in the open one; `commit()` commits it
        (and leaves no transaction open when it fails). `begin` and `run` return one answer
        per item, or raise (and roll back) when the database fails. `lock` is held from the
        begin to the end of each transaction (others who use the connection wait for a window
        to close). `urgent(item)`: the item needs the flush; `opens_window(item)`: its
        transaction stays open for `window_seconds` (an ingest's: others are committed at
        once)."""
        self._lock = lock or asyncio.Lock()
        self._begin = begin
        self._run = run
        self._commit = commit
        self._urgent = urgent
        self._opens_window = opens_window
        self._window_seconds = window_seconds
        self._linger_seconds = linger_seconds
        self._linger_max = linger_max
        self._waiting: list[tuple[Item, Submitted[Answer]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._go = asyncio.Event()  # an urgent write waits, or enough lazy ones do
        self._arrived = asyncio.Event()  # something waits (for an open window)
        self._closing = False  # the open window is to be committed now

    def commit_soon(self) -> None:
        """Close the open window now (a caller cannot go on until what it holds is durable)."""
        self._closing = True
        self._arrived.set()

    def submit(self, item: Item) -> Submitted[Answer]:
        """Queue `item`; it is written whether or not its caller still waits."""
        submitted: Submitted[Answer] = Submitted()
        self._waiting.append((item, submitted))
        self._arrived.set()
        if self._urgent(item) or len(self._waiting) >= self._linger_max:
            self._go.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="group-commit")
        return submitted

    async def _write_waiting(self) -> None:
        while self._waiting:
            if self._linger_seconds > 0 and not self._go.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_seconds):
                        await self._go.wait()
            self._closing = False
            window: list[tuple[Submitted[Answer], Answer]] = []  # run, not committed yet
            taken: list[tuple[Item, Submitted[Answer]]] = []
            try:
                async with self._lock:
                    # Decided on what is taken, after the lock: an ingest that arrived while
                    # this waited for it must be flushed too.
                    taken = self._take()
                    durable = any(self._urgent(item) for item, _ in taken)
                    _ran(window, taken, await self._begin([item for item, _ in taken], durable))
                    opened = any(self._opens_window(item) for item, _ in taken)
                    if durable and opened and self._window_seconds > 0:
                        closes = asyncio.get_running_loop().time() + self._window_seconds
                        waited_on = self._count_lazy(taken)
                        while waited_on < self._linger_max and (
                            (more := await self._next_in_window(closes)) is not None
                        ):
                            taken = more
                            _ran(window, taken, await self._run([item for item, _ in taken]))
                            waited_on += self._count_lazy(taken)
                        taken = []
                    await self._commit()
            except Exception as err:  # noqa: BLE001 - every writer in the window hears of it
                for submitted in [submitted for _, submitted in taken] + [s for s, _ in window]:
                    _fail(submitted, err)
            else:
                for submitted, answer in window:
                    if not submitted.committed.done():
                        submitted.committed.set_result(answer)

    async def _next_in_window(self, closes: float) -> list[tuple[Item, Submitted[Answer]]] | None:
        """What arrives before the window closes (None: it has closed)."""
        loop = asyncio.get_running_loop()
        while not self._waiting:
            left = closes - loop.time()
            if left <= 0 or self._closing:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()
        return self._take()

    def _count_lazy(self, taken: list[tuple[Item, Submitted[Answer]]]) -> int:
        """Writes in the window that their callers wait on before going on (claims, settles:
        not the ingests, whose callers already have their answers)."""
        return sum(not self._opens_window(item) for item, _ in taken)

    def _take(self) -> list[tuple[Item, Submitted[Answer]]]:
        self._go.clear()
        taken, self._waiting = self._waiting, []
        return taken


def _ran(
    window: list[tuple[Submitted[Answer], Answer]],
    taken: list[tuple[Item, Submitted[Answer]]],
    answers: list[Answer],
) -> None:
    """Tell each caller its answer (before the commit) and keep it for after."""
    for (_, submitted), answer in zip(taken, answers, strict=True):
        if not submitted.ran.done():
            submitted.ran.set_result(answer)
        window.append((submitted, answer))


def _fail(submitted: Submitted[Answer], err: Exception) -> None:
    for future in (submitted.ran, submitted.committed):
        if not future.done():
            future.set_exception(err)
            future.exception()  # a caller that only awaits the other one is not warned about
