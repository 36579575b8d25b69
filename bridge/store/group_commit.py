"""Group commit: writes asked for while one is being committed go together in the next one.

Each commit waits for an fsync (synchronous=FULL), so one transaction per write caps a busy
queue at the disk's fsync rate. Here, a write asked for while the disk is idle is committed at
once (no added wait at low load), and those asked for while a commit runs are written as one
batch right after it, so under load a batch grows until it keeps up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class GroupCommit(Generic[Item, Answer]):
    def __init__(self, write_batch: Callable[[list[Item]], Awaitable[list[Answer]]]) -> None:
        """`write_batch` writes a list of items in one transaction, one answer per item."""
        self._write_batch = write_batch
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        """Write `item` with whatever else is waiting; its answer, or the batch's error.

        A caller cancelled while waiting does not take its item back: the write goes on."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="group-commit")
        return await future

    async def _write_waiting(self) -> None:
        while self._waiting:
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
