"""Command line: `clockin-bridge <command>`, every command from the one registry in
bridge.commands. Errors every command shares (config, database) end here as one line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from bridge import __version__
from bridge.commands import registry
from bridge.commands.common import EXIT_CONFIG, fail
from bridge.config import ConfigError
from bridge.store import StoreError, StoreInUseError

EXIT_DATABASE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clockin-bridge", description="Badge terminals on MQTT -> time-and-attendance clouds"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    registry.register(parser.add_subparsers(dest="command", required=True))
    return parser


# Everything the bridge creates (the database and its -wal and -shm files, exports) holds
# names, badges and hours: readable by the bridge's own user only. Set here, in the one entry
# point the console script, `python -m bridge`, the Docker image and the systemd unit share.
PRIVATE_UMASK = 0o077


def main(argv: Sequence[str] | None = None) -> int:
    previous = os.umask(PRIVATE_UMASK)
    try:
        return _main(argv)
    finally:
        os.umask(previous)  # for a caller in the same process (tests); a real process ends here


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as err:
        return fail(f"config error: {err}", EXIT_CONFIG)
    except StoreInUseError as err:  # the machine's state, like a port in use: exit 2
        return fail(f"database error: {err}", EXIT_CONFIG)
    except StoreError as err:
        return fail(f"database error: {err}", EXIT_DATABASE)
    except KeyboardInterrupt:
        return 130
