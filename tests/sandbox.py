"""Start a command the way a service manager would: working directory `/`, umask 0077, a
non-root user, no new privileges, a clean environment, and files mounted where an installed
bridge expects them, in a private mount namespace (nothing on the host changes).

Tests run as root; the service runs as `nobody`. The interpreter may live where `nobody`
cannot reach (pyenv under /root, mode 0700): the namespace mounts it at the same path inside a
world-readable tmpfs, as systemd's own sandboxing rebuilds the file system a service sees.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiomqtt

from tests.broker import Mosquitto

NOBODY = 65534
# systemd's PATH for services (systemd.exec(5), "Environment variables in spawned processes").
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


PROJECT = Path(__file__).resolve().parent.parent  # the checkout under test


def unavailable() -> str | None:
    """Why services cannot be started this way here, or None."""
    if os.geteuid() != 0:
        return "needs root (to switch to a service user and mount in a private namespace)"
    missing = [tool for tool in ("unshare", "setpriv", "mount") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (util-linux, mount)"
    return None


def world_folder(prefix: str) -> Path:
    """A temporary folder every user may enter (pytest's tmp_path is root's alone, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def give(path: Path, mode: int, uid: int = NOBODY) -> None:
    os.chown(path, uid, uid)
    path.chmod(mode)


def _hidden_ancestor(path: Path) -> Path | None:
    """The topmost folder above `path` that other users cannot enter, if any."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _reveal(paths: Sequence[Path], script: list[str]) -> None:
    """Make each path reachable for the service user where a folder above it is not (pyenv
    under /root, a checkout under a 0700 mktemp folder): the hidden folder is replaced, in this
    namespace only, by an open tmpfs holding just the paths, at the same place."""
    q = shlex.quote
    wanted = sorted({path.resolve() for path in paths})
    outermost = [p for p in wanted if not any(o != p and o in p.parents for o in wanted)]
    by_hidden: dict[Path, list[Path]] = {}
    for path in outermost:
        hidden = _hidden_ancestor(path)
        if hidden is not None:
            by_hidden.setdefault(hidden, []).append(path)
    for hidden, inside in sorted(by_hidden.items()):
        script += [
            "hold=$(mktemp -d)",
            f'mount --bind {q(str(hidden))} "$hold"',
            f"mount -t tmpfs -o mode=0755 tmpfs {q(str(hidden))}",
        ]
        for path in inside:
            inner = q(str(path))
            script += [
                f"mkdir -p {inner}",
                f'mount --bind "$hold"/{q(str(path.relative_to(hidden)))} {inner}',
            ]
        script.append('umount "$hold"; rmdir "$hold"')


def _mounts(
    mounts: Mapping[Path, Path], read_only: Sequence[Path], work: Path, script: list[str]
) -> None:
    """Bind each source at its target; where a target does not exist, an overlay on the
    nearest existing folder above it makes room (only this namespace sees either). All
    overlays first: an overlay mounted later would hide the binds below it."""
    q = shlex.quote
    overlays: set[Path] = set()
    for target in mounts:
        if not target.exists():
            existing = target.parent
            while not existing.exists():
                existing = existing.parent
            overlays.add(existing)
    for folder in sorted(overlays):
        upper, scratch = Path(tempfile.mkdtemp(dir=work)), Path(tempfile.mkdtemp(dir=work))
        upper.chmod(folder.stat().st_mode & 0o7777)  # the merged folder takes upper's mode
        script.append(
            f"mount -t overlay overlay -o lowerdir={q(str(folder))},upperdir={q(str(upper))},"
            f"workdir={q(str(scratch))} {q(str(folder))}"
        )
    for target, source in mounts.items():
        if not target.exists():
            make = "mkdir -p" if source.is_dir() else "touch"
            script.append(f"mkdir -p {q(str(target.parent))}; {make} {q(str(target))}")
    for target, source in mounts.items():
        script.append(f"mount --bind {q(str(source))} {q(str(target))}")
        if target in read_only:
            script.append(f"mount -o remount,bind,ro {q(str(target))}")


def service_command(
    argv: Sequence[str],
    *,
    work: Path,
    mounts: Mapping[Path, Path] | None = None,
    read_only: Sequence[Path] = (),
    uid: int = NOBODY,
    watchdog_pid: bool = False,
) -> list[str]:
    """The command line that runs `argv` as a service would be run. `mounts` maps a target
    path (e.g. /etc/clockin-bridge) to the folder or file shown there; targets in `read_only`
    are mounted read-only. With `watchdog_pid`, WATCHDOG_PID is the service's own PID, as
    systemd sets it."""
    script = ["set -eu"]
    # The interpreter, and the checkout with its venv (the installed script and the editable
    # install's sources live there).
    _reveal([Path(sys.base_prefix), Path(sys.prefix), PROJECT], script)
    _mounts(mounts or {}, read_only, work, script)
    script += ["cd /", "umask 0077"]
    if watchdog_pid:
        script.append("WATCHDOG_PID=$$; export WATCHDOG_PID")
    drop = f"setpriv --reuid={uid} --regid={uid} --clear-groups --no-new-privs --"
    script.append(f"exec {drop} {shlex.join(argv)}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]


def service_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """A service's environment: systemd's PATH and LANG, and what the unit or image sets."""
    return {"PATH": SERVICE_PATH, "LANG": "C.UTF-8", **extra}


def broker_with_users(workdir: Path, users: Mapping[str, str]) -> Mosquitto:
    """A real mosquitto on a free port of 127.0.0.1 that admits only `users` (name: password),
    as the shipped broker config does; started."""
    workdir.mkdir(parents=True, exist_ok=True)
    passwd = workdir / "passwd"
    for number, (name, password) in enumerate(users.items()):
        create = ["-c"] if number == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwd), name, password],
            check=True,
            capture_output=True,
        )
    broker = Mosquitto(workdir / "broker", listener_extra=f"password_file {passwd}\n")
    broker.start()
    return broker


async def publish_as(port: int, user: str, password: str, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, identifier=f"{user}-test"
    ) as client:
        await client.publish(topic, payload, qos=1)
