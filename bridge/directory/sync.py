"""One sync: fetch every source at once, write each good answer to the cache, note each
failure (the source's last good records stay in use). Used by the daemon's periodic task and
by `clockin-bridge directory sync` alike; what is logged is the caller's business."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.directory.build import Source
from bridge.directory.records import Record, SourceError
from bridge.http import Session
from bridge.ops.redaction import mask_secrets
from bridge.store import DaemonStore


@dataclass(frozen=True, slots=True)
class Outcome:
    source: str
    ok: bool
    records: int = 0
    changed: bool = False
    error: str | None = None


async def fetch_one(source: Source, session: Session) -> list[Record] | str:
    """The source's records, or why they could not be read (no secret in it)."""
    try:
        return await source.fetch(session)
    except SourceError as err:
        return mask_secrets(str(err), source.secrets())
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # an answer of a shape
        return f"unexpected answer ({type(err).__name__})"  # the parser did not foresee


async def sync(store: DaemonStore, session: Session, sources: Sequence[Source]) -> list[Outcome]:
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(fetch_one(source, session), name=f"directory-source[{source.name}]")
            for source in sources
        ]
    outcomes = []
    for source, task in zip(sources, tasks, strict=True):
        result, now = task.result(), time.time()
        if isinstance(result, str):
            await store.directory_source_failed(source.name, result, now=now)
            outcomes.append(Outcome(source.name, ok=False, error=result))
        else:
            rows = (record.to_row() for record in result)  # one at a time: 50,000 dicts else
            changed = await store.save_directory_source(source.name, rows, now=now)
            outcomes.append(Outcome(source.name, ok=True, records=len(result), changed=changed))
    return outcomes
