"""`clockin-bridge reconcile --sink S --from DATE --to DATE`: compare a vendor with what the
bridge delivered, per person and day.

Exit codes: 0 everything matches; 1 something does not (missing at the vendor, only at the
vendor, or different); 2 a bad command line or config; 3 the vendor could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import date
from pathlib import Path
from typing import Any

from bridge.commands.common import (
    EXIT_CONFIG,
    EXIT_NOT_DONE,
    EXIT_OK,
    UsageError,
    emit,
    fail,
    handler,
    opened_store,
    settings_of,
)
from bridge.commands.progress import Progress
from bridge.http import new_session
from bridge.ops.redaction import mask_secrets
from bridge.reconcile.fetch import NotConfiguredError, ReadError
from bridge.reconcile.report import format_text, to_json, write_csv
from bridge.reconcile.run import (
    REQUEUEABLE,
    SOURCES,
    Report,
    chunk_count,
    reconcile,
    requeue_missing,
    window_for,
)

EXIT_UNREADABLE = 3

HELP = """\
Go2Clock is compared punch by punch (userid, checktime, checktype), read back with POST
/api/punches_range/ in calls of at most 7 days. McTime (GET /times), TimeTrack (attendances)
and OpenTimeClock Q2 (time cards, read-only) hold time entries, not punches: the entries the
bridge's delivered in/out/break events must have produced are compared (start, end, breaks).
--requeue-missing works for go2clock only (its duplicate answer makes a resend harmless); for
McTime and TimeTrack it is not safe (they keep a running clock or an open shift per person,
and an old action sent again would be judged against today's state): report only.
Exit: 0 all match, 1 something does not, 2 bad command line or config, 3 vendor unreadable."""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "reconcile",
        parents=[common],
        help="compare a vendor with what the bridge delivered",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sink", required=True, choices=SOURCES, help="the vendor to compare")
    parser.add_argument(
        "--from", dest="first", metavar="DATE", required=True, help="first day, YYYY-MM-DD"
    )
    parser.add_argument(
        "--to", dest="last", metavar="DATE", required=True, help="last day (included)"
    )
    parser.add_argument(
        "--requeue-missing",
        action="store_true",
        help="go2clock only: queue the punches missing at the vendor again",
    )
    parser.add_argument(
        "--csv", type=Path, metavar="FILE", help="write one row per person and day here"
    )
    parser.set_defaults(handler=handler(cmd_reconcile))


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        msg = f"{option} {text!r} is not a date (YYYY-MM-DD)"
        raise UsageError(msg) from None


def cmd_reconcile(args: argparse.Namespace) -> int:
    first, last = _day(args.first, "--from"), _day(args.last, "--to")
    if last < first:
        msg = f"--to {last} is before --from {first}"
        raise UsageError(msg)
    if args.requeue_missing and args.sink not in REQUEUEABLE:
        msg = (
            f"--requeue-missing is not safe for {args.sink}: it keeps state per person"
            " (or is read-only); reconcile reports only"
        )
        raise UsageError(msg)
    settings = settings_of(args, secrets=True)
    try:
        report = asyncio.run(_run(args, settings, first, last))
    except NotConfiguredError as err:  # the config, not the vendor: exit 2 like any config error
        return fail(f"config error: reconcile --sink {args.sink}: {err}", EXIT_CONFIG)
    except ReadError as err:
        # the readers mask what the vendor said; this is the last line of defence
        return fail(mask_secrets(f"reconcile: {err}", settings.secret_values()), EXIT_UNREADABLE)
    if args.csv is not None:
        write_csv([report], args.csv)
    # Through emit, as every command: names and notes from the vendor are printed escaped.
    emit(args, to_json(report), footer=format_text(report).split("\n"))
    return EXIT_OK if report.ok else EXIT_NOT_DONE


async def _run(args: argparse.Namespace, settings: Any, first: date, last: date) -> Report:
    total = chunk_count(args.sink, window_for(args.sink, settings, first, last))
    async with opened_store(settings) as store, new_session() as session:
        with Progress(f"reconcile {args.sink}", total) as bar:
            report = await reconcile(
                args.sink,
                settings=settings,
                store=store,
                session=session,
                first=first,
                last=last,
                on_chunk=bar.advance,
            )
        if args.requeue_missing:
            await requeue_missing(store, report)
        return report
