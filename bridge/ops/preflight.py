"""What the machine must offer before the daemon starts: the HTTP port free, the state folder
writable, the broker's TLS files loadable without a prompt.

`run` checks these before opening anything and `check-config` reports them, each as a
ConfigError naming the key and the problem (one line, exit 2), never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from bridge.config import ConfigError, HttpConfig, Settings
from bridge.ingest.client import tls_context
from bridge.store.lock import StoreInUseError, check_free

_LISTEN_PROBLEMS = {
    errno.EADDRINUSE: "is already in use (by another process, or a bridge already running)",
    errno.EADDRNOTAVAIL: "is not an address of this machine",
    errno.EACCES: "needs privileges this process does not have (a port below 1024?)",
}


def cannot_listen(listen: str, err: OSError) -> ConfigError:
    """The one-line error for a failed bind of `http.listen`."""
    if isinstance(err, socket.gaierror):
        return ConfigError(f"http.listen: {listen}: unknown host")
    problem = _LISTEN_PROBLEMS.get(err.errno or 0, f"cannot be bound: {err.strerror or err}")
    return ConfigError(f"http.listen: {listen} {problem}")


def check_listen(http: HttpConfig) -> None:
    """Bind every address of http.listen as the server will, and release it at once."""
    try:
        addresses = socket.getaddrinfo(
            http.host or None, http.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                # as asyncio's server does: a port left in TIME_WAIT by the last run is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    with contextlib.suppress(OSError):
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as err:
        raise cannot_listen(http.listen, err) from None


def check_state_folder(path: Path) -> None:
    """The folder of store.path must be a folder the bridge can create files in; when it does
    not exist yet, its nearest existing parent must be (the store creates it). Probed with a
    nameless temporary file, since permission bits say nothing to root about a read-only
    mount. Nothing is left behind."""
    folder = path.parent.absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    creating = "" if existing == folder else f"cannot create the folder {folder}: "
    if not existing.is_dir():
        msg = f"store.path: {creating}{existing} is not a folder"
        raise ConfigError(msg)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        msg = f"store.path: {creating}cannot write in {existing}: {err.strerror or err}"
        raise ConfigError(msg) from None


def check_single_bridge(path: Path) -> None:
    """No other bridge runs on this database (its daemon lock, bridge.store.lock)."""
    try:
        check_free(path)
    except StoreInUseError as err:
        msg = f"store.path: {err}"
        raise ConfigError(msg) from None


def environment_problems(settings: Settings) -> list[ConfigError]:
    """Every problem of the machine with this config, in the order `run` meets them."""
    problems = []
    checks: list[Callable[[], object]] = [
        lambda: check_single_bridge(settings.store.path),
        lambda: check_state_folder(settings.store.path),
    ]
    if settings.mqtt.tls is not None:
        tls = settings.mqtt.tls
        checks.append(lambda: tls_context(tls))
    if settings.http.enabled:
        checks.append(lambda: check_listen(settings.http))
    for check in checks:
        try:
            check()
        except ConfigError as err:
            problems.append(err)
    return problems


def check_environment(settings: Settings) -> None:
    """Raise the first problem `environment_problems` finds."""
    problems = environment_problems(settings)
    if problems:
        raise problems[0]
