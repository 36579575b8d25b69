"""A Debian 12 root booted with systemd-nspawn, driven through nsenter (FIELD-NOTES §6).

The root is built once with debootstrap and kept as a tarball in the cache folder
($CLOCKIN_TEST_CACHE, default ~/.cache/clockin-bridge); each boot unpacks a fresh copy. The host
runs no systemd, so nspawn runs with --register=no --keep-unit from a cgroup of its own, and is
driven with `nsenter -t <container PID 1> -a` (systemctl -M needs a host bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("CLOCKIN_TEST_CACHE", Path.home() / ".cache" / "clockin-bridge"))
SUITE = "bookworm"
# procps: /bin/kill for ExecReload; python3-venv: README step 1 (already there, so the step runs
# without a download).
PACKAGES = ("systemd", "dbus", "python3", "python3-venv", "procps")
CGROUP = Path("/sys/fs/cgroup")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unavailable() -> str | None:
    """Why a container cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces and cgroups)"
    missing = [tool for tool in ("debootstrap", "systemd-nspawn", "nsenter") if not _which(tool)]
    if missing:
        return f"{', '.join(missing)} missing: run scripts/ensure-test-tools.sh"
    hierarchies = [CGROUP / name for name in ("systemd", "unified") if (CGROUP / name).is_dir()]
    if not hierarchies and not (CGROUP / "cgroup.procs").exists():
        return "no cgroup hierarchy to give systemd-nspawn"
    probe = (hierarchies or [CGROUP])[0] / f"clockin-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        return f"no right to create cgroups ({probe}: {err.strerror})"
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (deb.debian.org otherwise)."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.is_file():
            found = re.search(r"(?:URIs:|^deb)\s+(\S+/debian)\s*$", path.read_text(), re.MULTILINE)
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def root_tarball() -> Path:
    """The cached Debian root, built on first use (~1.5 min with python3-venv, ~300 MB)."""
    key = hashlib.sha256(" ".join((SUITE, *PACKAGES)).encode()).hexdigest()[:12]
    zstd = shutil.which("zstd") is not None
    tarball = CACHE / f"debian-{SUITE}-{key}.tar{'.zst' if zstd else ''}"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=CACHE, prefix="debootstrap-"))
    try:
        done = subprocess.run(
            [
                str(_which("debootstrap")),
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(build / "root"),
                debian_mirror(),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if done.returncode != 0:
            msg = f"debootstrap failed: {(done.stdout + done.stderr)[-1500:]}"
            raise RootUnavailableError(msg)
        partial = tarball.with_name(tarball.name + ".partial")
        compress = ["-I", "zstd -T0"] if zstd else []
        subprocess.run(
            ["tar", *compress, "-C", str(build / "root"), "-cf", str(partial), "."], check=True
        )
        partial.replace(tarball)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return tarball


class RootUnavailableError(Exception):
    """The Debian root cannot be built here (no mirror reachable, say)."""


def unpack(tarball: Path, target: Path) -> None:
    target.mkdir(mode=0o755)
    compress = ["-I", "zstd"] if tarball.suffix == ".zst" else []
    subprocess.run(["tar", *compress, "-C", str(target), "-xf", str(tarball)], check=True)


class Container:
    """A booted container: `run` executes a shell script inside, as root, with a clean
    environment (nsenter would pass the host's on)."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.nspawn: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.log = root.parent / f"{name}.console"

    async def boot(self, *, timeout: float = 60) -> None:
        # A cgroup of its own under both hierarchies first, then exec nspawn from it. No
        # --private-network: the container shares the host's network, so the bridge reaches
        # the test's broker and vendor on 127.0.0.1 (free ports; nothing inside listens on a
        # fixed one).
        script = "set -e\n"
        for folder in self._cgroups():
            script += f"mkdir -p {folder}; echo $$ > {folder}/cgroup.procs\n"
        script += (
            f"exec {_which('systemd-nspawn')} --quiet --register=no --keep-unit -M {self.name}"
            f" -D {self.root} -b --console=read-only"
        )
        with self.log.open("wb") as out:
            self.nspawn = await asyncio.create_subprocess_exec(
                "sh", "-c", script, stdout=out, stderr=subprocess.STDOUT
            )
        async with asyncio.timeout(timeout):
            while not self.pid:
                self._check_alive()
                self.pid = self._init_pid()
                await asyncio.sleep(0.05)
            while True:
                self._check_alive()
                state = await self.run("systemctl is-system-running", check=False)
                if state.stdout.strip() in ("running", "degraded"):
                    return
                await asyncio.sleep(0.1)

    def _init_pid(self) -> int:
        """The container's PID 1: nspawn's child running systemd (nspawn forks helpers too)."""
        assert self.nspawn is not None
        children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return 0

    def _check_alive(self) -> None:
        assert self.nspawn is not None
        if self.nspawn.returncode is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            msg = f"systemd-nspawn exited with {self.nspawn.returncode}: {tail}"
            raise AssertionError(msg)

    def _cgroups(self) -> list[Path]:
        hierarchies = [CGROUP / name for name in ("systemd", "unified") if (CGROUP / name).is_dir()]
        return [folder / f"nspawn-{self.name}" for folder in hierarchies or [CGROUP]]

    async def run(
        self,
        script: str,
        *,
        stdin: str = "",
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        environment = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        argv = [
            str(_which("nsenter")),
            "-t",
            str(self.pid),
            "-a",
            "env",
            "-i",
            *(f"{name}={value}" for name, value in environment.items()),
            "sh",
            "-ec",
            script,
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=timeout)
        done = subprocess.CompletedProcess(
            argv,
            process.returncode or 0,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
        if check and done.returncode != 0:
            msg = f"in the container, {script!r} exited {done.returncode}:\n"
            msg += f"{done.stdout}\n{done.stderr}"
            raise AssertionError(msg)
        return done

    async def power_off(self) -> None:
        """SIGTERM to nspawn shuts the container down cleanly; a container that does not go
        (still booting, say) has every process in its cgroups killed. Then its cgroups go."""
        if self.nspawn is not None and self.nspawn.returncode is None:
            self.nspawn.terminate()
            try:
                await asyncio.wait_for(self.nspawn.wait(), timeout=20)
            except TimeoutError:
                self._kill_all()
                self.nspawn.kill()
                await self.nspawn.wait()
        self._kill_all()
        for folder in self._cgroups():
            if folder.is_dir():
                inner = [path for path in folder.rglob("*") if path.is_dir()]
                for path in sorted(inner, key=lambda p: len(p.parts), reverse=True):
                    path.rmdir()
                folder.rmdir()
        propagate = Path("/run/systemd/nspawn/propagate") / self.name
        with contextlib.suppress(OSError):
            propagate.rmdir()

    def _kill_all(self) -> None:
        for folder in self._cgroups():
            for procs in folder.rglob("cgroup.procs") if folder.is_dir() else ():
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)  # the kernel empties the cgroups
