"""What every operator command shares: options, settings, the store, times, output."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bridge.commands.table import format_table, printable
from bridge.config import Settings, load_settings
from bridge.config.paths import INSTALLED_CONFIG_DIR
from bridge.store import Store, StoreRole, parse_utc_text, utc_text
from bridge.store.admin import Moved
from bridge.store.postgres import PostgresStore
from bridge.vendors.registry import VENDORS

EXIT_OK = 0
EXIT_NOT_DONE = 1  # an id not found, or not in the expected state
EXIT_CONFIG = 2

SINK_NAMES = tuple(vendor.name for vendor in VENDORS if vendor.sink is not None)


class UsageError(Exception):
    """A command line that cannot be carried out (e.g. a bad time); exit 2 like argparse."""


def default_config() -> Path:
    """--config's default, for every command: $CLOCKIN_CONFIG, else an installed bridge's
    /etc/clockin-bridge/config.yaml when it exists (so an operator's command finds the
    service's database), else config.yaml in the working directory (a checkout)."""
    if configured := os.environ.get("CLOCKIN_CONFIG"):
        return Path(configured)
    installed = INSTALLED_CONFIG_DIR / "config.yaml"
    return installed if installed.is_file() else Path("config.yaml")


def common_options() -> argparse.ArgumentParser:
    """The options every command takes, as a parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", type=Path, default=default_config(), help="config file")
    parent.add_argument("--json", action="store_true", help="machine-readable output")
    return parent


def settings_of(args: argparse.Namespace, *, secrets: bool = False) -> Settings:
    """The config, without reading credentials unless the command talks to a vendor."""
    return load_settings(args.config, secrets=secrets)


@contextlib.asynccontextmanager
async def opened_store(
    settings: Settings, *, role: StoreRole = StoreRole.ADMIN
) -> AsyncIterator[Store | PostgresStore]:
    """The daemon's database, which must exist (a command never creates or migrates one);
    READ_ONLY for a command that only shows. With store.url, the PostgreSQL database the
    bridges share (a command takes no instance's identity and holds no claims)."""
    rules = settings.inference.rules(
        tz=settings.site.tz, window_seconds=settings.dedupe.window_seconds
    )
    config = settings.store
    if config.url is not None:
        async with PostgresStore.open(
            config.url,
            site_tz=settings.site.tz,
            window_seconds=settings.dedupe.window_seconds,
            inference=rules,
            instance=f"command-{os.getpid()}",
            password=None if config.password is None else config.password.get_secret_value(),
            migrate=False,
            pool_size=1,
        ) as shared:
            yield shared
        return
    async with Store.open(
        config.path,
        site_tz=settings.site.tz,
        window_seconds=settings.dedupe.window_seconds,
        inference=rules,
        role=role,
    ) as store:
        yield store


# --- times --------------------------------------------------------------------------------


def local_text(utc: str | None, tz: ZoneInfo) -> str | None:
    """A stored UTC time as site-local text, seconds precision, with its offset."""
    if utc is None:
        return None
    return parse_utc_text(utc).astimezone(tz).isoformat(timespec="seconds")


def local_from_unix(seconds: float | None, tz: ZoneInfo) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).astimezone(tz).isoformat(timespec="seconds")


def parse_moment(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime:
    """An operator's ISO-8601 date or date-time → aware UTC; site-local when naive.

    A bare date is the start of that local day, or with `end_of_day` the start of the next
    (so `--until 2026-11-23` includes all of the 23rd)."""
    value = text.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        if end_of_day:
            day += timedelta(days=1)
        return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        msg = f"{text!r} is not an ISO-8601 date or date-time (e.g. 2026-11-23T17:30)"
        raise UsageError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def moment_text(moment: datetime) -> str:
    return utc_text(moment)


# --- output -------------------------------------------------------------------------------


def emit(
    args: argparse.Namespace,
    data: Any,
    *,
    headers: Sequence[str] = (),
    rows: Sequence[Sequence[object]] = (),
    empty: str = "",
    footer: Sequence[str] = (),
) -> None:
    """--json: `data` as JSON on stdout; otherwise the table (or `empty` when no rows).

    Every command prints through here, and what it prints may come from a terminal, a vendor
    or the directory: control and bidi characters are escaped (table.printable; a footer line
    is one line, its line breaks escaped too). JSON escapes them itself (ensure_ascii)."""
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=True))
        return
    if headers and rows:
        print(format_table(headers, rows))
    elif empty:
        print(printable(empty))
    for line in footer:
        print(printable(line))


def report_moved(
    args: argparse.Namespace, moved: Moved, *, verb: str, expect: str, extra: dict[str, Any]
) -> int:
    """Print what a guarded change did; exit 1 when some rows were not in the expected state."""
    refused = {str(delivery_id): state for delivery_id, state in sorted(moved.refused.items())}
    data = {verb: moved.changed, "not_changed": refused, **extra}
    lines = [f"{verb}: {len(moved.changed)}" + _ids(moved.changed)]
    for delivery_id, state in sorted(moved.refused.items()):
        why = "no such delivery" if state is None else f"is {state}, not {expect}"
        lines.append(f"delivery {delivery_id}: {why}; left as it was")
    emit(args, data, footer=lines)
    return EXIT_NOT_DONE if moved.refused else EXIT_OK


def _ids(ids: Sequence[int], limit: int = 20) -> str:
    if not ids:
        return ""
    shown = ", ".join(str(i) for i in ids[:limit])
    return f" ({shown}{', ...' if len(ids) > limit else ''})"


def fail(message: str, code: int) -> int:
    print(f"clockin-bridge: {printable(message)}", file=sys.stderr)
    return code


def handler(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a command's UsageError into exit 2 with one line (config and store errors are
    handled by cli.main for every command alike)."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except UsageError as err:
            return fail(str(err), EXIT_CONFIG)

    return wrapped
