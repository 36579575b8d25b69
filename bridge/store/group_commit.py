"""Group commit: writes asked for while one is being committed go together in the next one.

Each commit waits for an fsync (synchronous=FULL), so one transaction per write caps a busy
queue at the disk's fsync rate. Here, a write asked for while the disk is idle is committed at
once (no added wait at low load), and those asked for while a commit runs are written as one
batch right after it, so under load a batch grows until it keeps up.

A write that is not urgent (one that needs no flush: bridge/store/durability.py) may also wait
up to `linger_seconds` for company: until an urgent write comes (an ingest, whose commit it then
shares) or `linger_max` writes have gathered. At a few swipes a second every transaction writes
one WAL frame per page it touches, and most pages a claim or settle touches are the ones the
next ingest touches anyway: sharing that commit is what keeps the bytes per swipe down.

`linger_max` must stay well below what a dispatcher holds at once (concurrency + CLAIM_AHEAD,
at least 33): a dispatcher whose every held delivery waits for its settle claims nothing new,
so if that many could never make a batch, each batch would wait out the whole linger and the
queue would drain at most one dispatcher's worth per linger (measured: 37 a second).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class GroupCommit(Generic[Item, Answer]):
    def __init__(
        self,
        write_batch: Callable[[list[Item]], Awaitable[list[Answer]]],
        *,
        urgent: Callable[[Item], bool] = lambda _item: True,
        linger_seconds: float = 0.0,
        linger_max: int = 16,
    ) -> None:
        """`write_batch` writes a list of items in one transaction, one answer per item.
        `urgent(item)`: the item is committed as soon as the writer is free; the others may
        linger (see the module docstring)."""
        self._write_batch = write_batch
        self._urgent = urgent
        self._linger_seconds = linger_seconds
        self._linger_max = linger_max
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._go = asyncio.Event()  # the waiting writes need not linger any longer

    async def submit(self, item: Item) -> Answer:
        """Write `item` with whatever else is waiting; its answer, or the batch's error.

        A caller cancelled while waiting does not take its item back: the write goes on."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._urgent(item) or len(self._waiting) >= self._linger_max:
            self._go.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="group-commit")
        return await future

    async def _write_waiting(self) -> None:
        while self._waiting:
            if self._linger_seconds > 0 and not self._go.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_seconds):
                        await self._go.wait()
            self._go.clear()
            batch, self._waiting = self._waiting, []
            try:
                answers = await self._write_batch([item for item, _ in batch])
            except Exception as err:  # noqa: BLE001 - every writer in the batch hears of it and may retry
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
            else:
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
