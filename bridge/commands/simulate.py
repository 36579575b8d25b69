"""`clockin-bridge simulate go2clock|mctime|timetrack|q2 [--port N]`: a vendor's simulator on
its own, answering as the vendor's documents say, so the shipped config.yaml has something to
send to. It accepts the credentials the config gives that vendor (or the simulator's own when
the config has none) and listens where the config's base_url points when that is this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from bridge.commands.common import EXIT_OK, settings_of
from bridge.config import Settings
from bridge.vendors.go2clock import simulator as go2clock
from bridge.vendors.mctime import simulator as mctime
from bridge.vendors.q2 import simulator as q2
from bridge.vendors.serving import serving
from bridge.vendors.timetrack import simulator as timetrack

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class _Vendor:
    base_url: Callable[[Settings], str]
    fake: Callable[[Settings], Any]  # the simulator's state, with the config's credentials
    make_app: Callable[[Any], Any]


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _given(**credentials: str | None) -> dict[str, str]:
    return {name: value for name, value in credentials.items() if value}


VENDORS: dict[str, _Vendor] = {
    "go2clock": _Vendor(
        base_url=lambda s: s.sinks.go2clock.base_url,
        fake=lambda s: go2clock.FakeGo2Clock(**_given(api_key=_secret(s.sinks.go2clock.api_key))),
        make_app=go2clock.make_app,
    ),
    "mctime": _Vendor(
        base_url=lambda s: s.sinks.mctime.base_url,
        fake=lambda s: mctime.FakeMcTime(**_given(api_key=_secret(s.sinks.mctime.api_key))),
        make_app=mctime.make_app,
    ),
    "timetrack": _Vendor(
        base_url=lambda s: s.sinks.timetrack.base_url,
        fake=lambda s: timetrack.FakeTimeTrack(
            **_given(
                api_key=_secret(s.sinks.timetrack.api_key),
                api_secret=_secret(s.sinks.timetrack.api_secret),
            )
        ),
        make_app=timetrack.make_app,
    ),
    "q2": _Vendor(
        base_url=lambda s: s.reconcile.q2.base_url,
        fake=lambda s: q2.FakeQ2(
            **_given(
                company_id=s.reconcile.q2.company_id,
                developer_token=_secret(s.reconcile.q2.developer_token),
            )
        ),
        make_app=q2.make_app,
    ),
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "simulate", parents=[common], help="serve a vendor's simulator (try the bridge with it)"
    )
    parser.add_argument("vendor", choices=sorted(VENDORS))
    parser.add_argument(
        "--port",
        type=int,
        help="default: the port of the config's base_url for that vendor when it is on this"
        " machine, else any free port",
    )
    parser.set_defaults(handler=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=True)
    vendor = VENDORS[args.vendor]
    port = args.port if args.port is not None else _local_port(vendor.base_url(settings))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(vendor.make_app(vendor.fake(settings)), args.vendor, port))
    return EXIT_OK


def _local_port(base_url: str) -> int:
    parts = urlsplit(base_url)
    if parts.hostname in LOCAL_HOSTS and parts.port:
        return parts.port
    return 0


async def _serve(app: Any, name: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serving(app, port=port) as url:
        print(f"{name} simulator on {url} (Ctrl-C to stop)", flush=True)
        await stop.wait()
