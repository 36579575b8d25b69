"""Shared pieces of the benchmarks: machine info, a mosquitto broker, a bridge subprocess with a
generated config, fast vendor fakes, a publisher subprocess, and small measuring helpers.

Benchmarks print figures and ratios to a reference measured in the same run; nothing here
asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bridge.vendors.go2clock.simulator import FakeGo2Clock, running_fake_go2clock  # noqa: E402
from tests.broker import Mosquitto, free_port  # noqa: E402

PY = sys.executable
API_KEY = "bench-go2clock-key"
MCTIME_KEY = "bench-mctime-key"
TOPIC = "clockin/{terminal}/events"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine and command -----------------------------------------------------------------------


def _first(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_info() -> dict[str, str]:
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    try:
        mosq = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError):
        mosq = "?"
    import aiohttp
    import aiomqtt
    import aiosqlite
    import paho.mqtt

    return {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "ram": f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": mosq.replace("mosquitto version ", ""),
        "sqlite": sqlite3.sqlite_version,
        "libs": f"aiomqtt {aiomqtt.__version__ if hasattr(aiomqtt, '__version__') else '?'}, "
        f"paho-mqtt {paho.mqtt.__version__}, aiosqlite {aiosqlite.__version__}, "
        f"aiohttp {aiohttp.__version__}",
        "tmp": tempfile.gettempdir(),
    }


def mosquitto_binary() -> str:
    from tests.broker import MOSQUITTO

    return MOSQUITTO


def header(title: str) -> None:
    """Print what was run and where: the exact command and the machine."""
    print(f"== {title}")
    print(
        "command: PYTHONPATH=. "
        + shlex.join([Path(PY).name, *sys.argv]).replace(Path(PY).name, "python", 1)
    )
    for key, value in machine_info().items():
        print(f"  {key}: {value}")
    sys.stdout.flush()


def result(name: str, **fields: Any) -> None:
    """One machine-readable line per figure (bench/run_all.sh collects them)."""
    print("RESULT " + json.dumps({"bench": name, **fields}, default=str))
    sys.stdout.flush()


def workdir(name: str) -> Path:
    """A fresh directory on the same disk as /tmp (ext4 here, not tmpfs: fsync is real)."""
    return Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))


# -- broker --------------------------------------------------------------------------------------


class Broker(Mosquitto):
    """tests.broker.Mosquitto with the settings of deploy/mosquitto.conf: persistence, no limit
    on queued messages, 100 messages in flight per client, autosave every 60 s (the test broker
    saves on every change, which would make it, not the bridge, the bottleneck). $SYS every 1 s."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "user root\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "autosave_interval 60\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 100\n"
            "set_tcp_nodelay true\n"
            "sys_interval 1\n"
            f"log_dest file {directory}/mosquitto.log\n"
            "log_type error\nlog_type warning\n"
        )


@contextlib.contextmanager
def broker(directory: Path) -> Iterator[Broker]:
    b = Broker(directory / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.stop()


# -- vendor fakes --------------------------------------------------------------------------------


class FastFakeGo2Clock(FakeGo2Clock):
    """The project's fake Go2Clock, with its duplicate check made O(1): the original rebuilds a
    Counter of every stored punch on each request, which at 100,000 punches makes the fake, not
    the bridge, the bottleneck. Answers are unchanged."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(api_key=api_key)
        self._keys: Counter[tuple[str, str]] = Counter()
        self.held: list[float] = []  # seconds each PUT spent in the handler (its real latency)

    async def put_punch(self, request: web.Request) -> web.StreamResponse:
        began = time.monotonic()
        try:
            return await super().put_punch(request)
        finally:
            self.held.append(time.monotonic() - began)

    def mean_held(self) -> float:
        return sum(self.held) / len(self.held) if self.held else float("nan")

    def punches_by_key(self) -> Counter[tuple[str, str]]:
        return self._keys

    async def _store(self, form: dict[str, str]) -> None:
        self._keys[(form["userid"], form["checktime"])] += 1
        await super()._store(form)


@contextlib.asynccontextmanager
async def fake_go2clock(
    *, delay: float = 0.0, api_key: str = API_KEY
) -> AsyncIterator[tuple[FastFakeGo2Clock, str]]:
    fake = FastFakeGo2Clock(api_key=api_key)
    fake.delay_seconds = delay
    async with running_fake_go2clock(fake) as url:
        yield fake, url


# -- the bridge ----------------------------------------------------------------------------------


def write_directory(path: Path, people: int) -> None:
    rows = ["badge,userid,name,mctime_user_id"]
    rows += [f"B{n:05d},{10000 + n},Person {n},mc-{n}" for n in range(people)]
    path.write_text("\n".join(rows) + "\n")


DEFAULT_ACK_TOPIC = "clockin/{terminal}/ack"  # the bridge's default: feedback on


def write_config(
    directory: Path,
    *,
    broker_port: int,
    people: int,
    go2clock_url: str | None = None,
    go2clock_key: str = API_KEY,
    concurrency: int = 4,
    mctime_url: str | None = None,
    mctime_rate: float = 10.0,
    log_level: str = "warning",
    ack_topic: str | None = DEFAULT_ACK_TOPIC,
    max_batch: int = 500,
    pause_probe_seconds: float = 3600.0,
    client_id: str = "bench-bridge",
) -> tuple[Path, int]:
    """A config.yaml for a benchmark bridge; returns its path and the HTTP port."""
    http_port = free_port()
    write_directory(directory / "directory.csv", people)
    sinks: dict[str, Any] = {}
    if go2clock_url is not None:
        sinks["go2clock"] = {
            "enabled": True,
            "base_url": go2clock_url,
            "api_key": go2clock_key,
            "concurrency": concurrency,
            "timeout_seconds": 15,
        }
    if mctime_url is not None:
        sinks["mctime"] = {
            "enabled": True,
            "base_url": mctime_url,
            "api_key": MCTIME_KEY,
            "rate_per_second": mctime_rate,
            "concurrency": concurrency,
        }
    config = {
        "site": {"timezone": "UTC"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "client_id": client_id,
            "ack_topic": ack_topic,
        },
        "store": {"path": str(directory / "bridge.db"), "max_batch": max_batch},
        "directory": {"path": str(directory / "directory.csv"), "reload_seconds": 5.0},
        "retry": {"pause_probe_seconds": pause_probe_seconds},
        "sinks": sinks,
        "http": {"enabled": True, "listen": f"127.0.0.1:{http_port}"},
        "log": {"level": log_level, "format": "json"},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, http_port


class BridgeProcess:
    """`python -m bridge run --config ...` as a subprocess; stdout/stderr go to bridge.log."""

    def __init__(
        self,
        config: Path,
        http_port: int,
        *,
        profile: Path | None = None,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.http_port = http_port
        self.log = config.parent / "bridge.log"
        self.profile = profile
        self.wrapper = wrapper  # a command the bridge runs under (e.g. strace ... --)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_seconds: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        command = [PY, "-m", "bridge", "run", "--config", str(self.config)]
        if self.profile is not None:  # py-spy records the whole run, native frames off
            command = [
                str(Path(PY).parent / "py-spy"),
                "record",
                "--rate",
                "250",
                "--format",
                "raw",
                "-o",
                str(self.profile),
                "--",
                *command,
            ]
        command = [*self.wrapper, *command]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.started_at = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=self.config.parent, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def readiness(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/readyz", timeout=1
            ) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:  # 503: not ready, with the reasons
            return json.loads(err.read())
        except OSError:
            return None

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from start to ready: database open and broker connected (a paused sink is
        reported by /readyz too, but does not count here)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                msg = f"bridge exited {self.process.returncode}: {self.tail()}"
                raise RuntimeError(msg)
            ready = await asyncio.to_thread(self.readiness)
            if ready is not None:
                checks = {p["check"] for p in ready.get("problems", [])}
                if not checks & {"mqtt", "database"}:
                    self.ready_seconds = time.monotonic() - self.started_at
                    return self.ready_seconds
            await asyncio.sleep(0.02)
        msg = f"bridge not ready in {timeout} s: {self.tail()}"
        raise TimeoutError(msg)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        target = self.process.pid
        if self.profile is not None or self.wrapper:  # to the child: py-spy then writes its file
            target = _child_pid(self.process.pid) or target
            os.kill(target, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    # /proc figures of the bridge's Python process (py-spy's child when profiling)
    def _proc_pid(self) -> int:
        wrapped = self.profile is not None or self.wrapper
        return (_child_pid(self.pid) or self.pid) if wrapped else self.pid

    def write_bytes(self) -> int:
        """Bytes the bridge's process has caused to be written to storage (/proc/PID/io)."""
        for line in Path(f"/proc/{self._proc_pid()}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        return 0

    def rss_mib(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB."""
        status = Path(f"/proc/{self._proc_pid()}/status").read_text()
        values = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in status.splitlines()
            if line.startswith(("VmRSS", "VmHWM"))
        }
        return values["VmRSS"], values["VmHWM"]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self._proc_pid())


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _child_pid(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
    return None


@contextlib.contextmanager
def running_bridge(
    config: Path, http_port: int, *, profile: Path | None = None
) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(config, http_port, profile=profile)
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


async def create_session(config: Path, http_port: int) -> None:
    """Start the bridge once and stop it: its persistent session (subscription) now exists, so
    the broker keeps what is published while it is down."""
    with running_bridge(config, http_port) as bridge:
        await bridge.wait_ready()


# -- publishing ----------------------------------------------------------------------------------


def publish(
    port: int,
    count: int,
    *,
    rate: float = 0.0,
    people: int = 2000,
    start: int = 0,
    stamp: bool = False,
    time_mode: str = "spaced",
    client_id: str = "",
) -> dict[str, Any]:
    """Run bench/publisher.py in its own process (so it does not share a GIL with the fakes)
    and return its summary (published, acknowledged, seconds)."""
    command = [
        PY,
        str(ROOT / "bench" / "publisher.py"),
        "--port",
        str(port),
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--people",
        str(people),
        "--start",
        str(start),
        "--time-mode",
        time_mode,
    ]
    if stamp:
        command.append("--stamp")
    if client_id:
        command += ["--client-id", client_id]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def publish_async(port: int, count: int, **kwargs: Any) -> dict[str, Any]:
    return await asyncio.to_thread(publish, port, count, **kwargs)


# -- measuring -----------------------------------------------------------------------------------


def db_max_id(db: Path, table: str = "events") -> int:
    """Rows in an append-only table (max rowid: O(log n), unlike count(*))."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
        return int(c.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])


def db_count(db: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
        return int(c.execute(sql).fetchone()[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    import bisect

    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0
    )


# -- backlogs built directly in SQLite -----------------------------------------------------------


async def build_backlog_via_store(
    directory: Path,
    count: int,
    *,
    people: int,
    sinks: dict[str, str],
    batch: int = 5000,
    spacing: float = 1.0,
) -> float:
    """Queue `count` events through the bridge's own Store.ingest (the production write path,
    with duplicate checks and one delivery per sink), in transactions of `batch` events, without
    MQTT. `sinks` maps sink name -> directory column. Returns the seconds it took."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    try:
        from bridge.directory.people import make_resolver
    except ImportError:  # before the directory wiring moved out of bridge/app.py
        from bridge.app import make_resolver  # type: ignore[attr-defined,no-redef]
    from bridge.directory.file import DirectoryFile
    from bridge.events import PayloadFormat

    try:
        from bridge.routing import parse_event
    except ImportError:  # before parsing moved out of bridge/events.py
        from bridge.events import parse_event  # type: ignore[attr-defined,no-redef]
    from bridge.store import Incoming, Store

    write_directory(directory / "directory.csv", people)
    resolve = make_resolver(sinks, DirectoryFile(directory / "directory.csv"))
    utc = ZoneInfo("UTC")
    base = datetime.now(UTC) - timedelta(seconds=count * spacing)
    began = time.monotonic()
    async with Store.open(directory / "bridge.db", site_tz=utc) as store:
        for first in range(0, count, batch):
            now = datetime.now(UTC)
            items = []
            for n in range(first, min(count, first + batch)):
                topic = f"clockin/gate{n % 4}/events"
                body = json.dumps(
                    {
                        "id": f"bench-{n}",
                        "badge": f"B{n % people:05d}",
                        "action": "in" if (n // people) % 2 == 0 else "out",
                        "time": (base + timedelta(seconds=n * spacing)).isoformat(),
                    }
                ).encode()
                event = parse_event(
                    topic,
                    body,
                    PayloadFormat.CANONICAL,
                    pattern="clockin/+/events",
                    site_tz=utc,
                    received_at=now,
                )
                assert event is not None
                items.append(Incoming(event, topic))
            await store.ingest(items, resolve=resolve, received_at=now)
    return time.monotonic() - began


def build_backlog_bulk(
    directory: Path, count: int, *, people: int, sink: str = "go2clock", chunk: int = 50_000
) -> float:
    """Queue `count` events with plain sqlite3 executemany, row for row what Store.ingest writes
    for a canonical event with an action (bridge/store/intake.py, schema from Store.open's
    migrations), but without its per-event duplicate queries: 1,000,000 events take about a
    minute instead of several. Returns the seconds it took."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from bridge.events import PayloadFormat

    try:
        from bridge.routing import parse_event
    except ImportError:  # before parsing moved out of bridge/events.py
        from bridge.events import parse_event  # type: ignore[attr-defined,no-redef]
    from bridge.store import Store, utc_text

    write_directory(directory / "directory.csv", people)
    db_path = directory / "bridge.db"
    utc = ZoneInfo("UTC")

    async def migrate() -> None:
        async with Store.open(db_path, site_tz=utc):
            pass

    asyncio.run(migrate())
    base = datetime.now(UTC) - timedelta(seconds=count)
    began = time.monotonic()
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        start_id = int(db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        for first in range(0, count, chunk):
            received = datetime.now(UTC)
            now = time.time()
            events, deliveries = [], []
            for n in range(first, min(count, first + chunk)):
                topic = f"clockin/gate{n % 4}/events"
                body = json.dumps(
                    {
                        "id": f"bench-{n}",
                        "badge": f"B{n % people:05d}",
                        "action": "in" if (n // people) % 2 == 0 else "out",
                        "time": (base + timedelta(seconds=n)).isoformat(),
                    }
                ).encode()
                e = parse_event(
                    topic,
                    body,
                    PayloadFormat.CANONICAL,
                    pattern="clockin/+/events",
                    site_tz=utc,
                    received_at=received,
                )
                assert e is not None
                assert e.action is not None
                when = utc_text(e.time)
                event_id = start_id + n + 1
                events.append(
                    (
                        event_id,
                        e.key,
                        e.terminal,
                        e.subject,
                        e.badge,
                        e.user,
                        e.action.value,
                        False,
                        when,
                        e.time.astimezone(utc).date().isoformat(),
                        e.time_given,
                        utc_text(received),
                        "accepted",
                        None,
                        topic,
                        e.job,
                        e.lat,
                        e.lon,
                        e.note,
                        e.source_id,
                    )
                )
                # Store.ingest stamps each event with its own time.time(): keep them distinct
                # (ties in next_attempt_at make the claim query sort and test every tied row).
                stamp = now + (n - first) * 1e-5
                deliveries.append(
                    (event_id, sink, str(10000 + n % people), when, "pending", stamp, stamp)
                )
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO events (id, key, terminal, subject, badge, user_id, action,"
                " action_inferred, event_time, local_day, time_given, received_at, status,"
                " duplicate_of, topic, job, lat, lon, note, source_id)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                events,
            )
            db.executemany(
                "INSERT INTO deliveries (event_id, sink, person, event_time, state,"
                " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                deliveries,
            )
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.monotonic() - began
