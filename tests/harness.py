"""Helpers for end-to-end tests: settings for a test bridge, running it, publishing to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from bridge.app import Bridge
from bridge.config import Settings, StoreConfig, load_settings

API_KEY = "test-go2clock-key-7f3a9c"
# What a bridge waits by default for writes to share a commit (store.commit_wait_seconds).
SHIPPED_COMMIT_WAIT: float = StoreConfig.model_fields["commit_wait_seconds"].default


def write_config(
    tmp_path: Path, *, broker_port: int, go2clock_url: str, extra: dict[str, Any] | None = None
) -> Path:
    """A config.yaml for a test bridge; `extra` is deep-merged over the defaults."""
    config: dict[str, Any] = {
        "site": {"timezone": "Europe/Berlin"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "bridge-under-test"},
        # Committed at once: each test would otherwise wait for company it never gets. The
        # crash and power-cut tests run with the shipped wait (SHIPPED_COMMIT_WAIT).
        "store": {"path": str(tmp_path / "bridge.db"), "commit_wait_seconds": 0},
        "directory": {"path": str(tmp_path / "directory.csv"), "reload_seconds": 0.2},
        "retry": {"initial_seconds": 0.05, "max_seconds": 0.5, "pause_probe_seconds": 0.3},
        # Sent as soon as stored: tests that are about the settle window set it
        # (tests/test_late_punches.py), as tests about retries set their own back-off.
        "dispatch": {"settle_seconds": 0},
        "sinks": {
            "go2clock": {
                "enabled": True,
                "base_url": go2clock_url,
                "api_key": API_KEY,
                "timeout_seconds": 2,
            }
        },
        "log": {"level": "info", "format": "json"},
        "http": {"listen": "127.0.0.1:0"},
    }
    _merge(config, extra or {})
    directory = tmp_path / "directory.csv"
    if not directory.exists():
        write_directory(directory, {f"B{n:04d}": str(1000 + n) for n in range(200)})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def write_directory(path: Path, badges: dict[str, str]) -> None:
    rows = ["badge,userid,name"] + [
        f"{badge},{user},Person {user}" for badge, user in badges.items()
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(rows) + "\n")
    tmp.replace(path)  # atomic, as an operator's editor or a sync job would do


def settings_from(path: Path) -> Settings:
    return load_settings(path)


@contextlib.asynccontextmanager
async def running_bridge(settings: Settings) -> AsyncIterator[Bridge]:
    bridge = Bridge(settings)
    task = asyncio.create_task(bridge.run(), name="bridge-under-test")
    ready = asyncio.create_task(bridge.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what stopped it
    if ready not in done:
        ready.cancel()
        task.cancel()
        msg = "bridge not ready within 15 s"
        raise TimeoutError(msg)
    try:
        yield bridge
    finally:
        bridge.stop()
        await asyncio.wait_for(task, timeout=20)


START = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def event_time(n: int) -> datetime:
    """Event n's time: 7 s apart, so one badge's events (every 200th) are far outside the
    double-swipe window and never share a Go2Clock checktime."""
    return START + timedelta(seconds=7 * n)


def canonical(n: int, *, badge: str | None = None, action: str = "in") -> bytes:
    """Event n: a distinct badge-swipe payload with its own id and time."""
    payload = {
        "id": f"evt-{n:06d}",
        "badge": badge or f"B{n % 200:04d}",
        "action": action,
        "time": event_time(n).isoformat(),
    }
    return json.dumps(payload).encode()


async def publish(port: int, messages: Iterable[tuple[str, bytes]], *, client_id: str = "") -> int:
    """Publish with QoS 1 from a real MQTT client; returns how many were published."""
    count = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id or None) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)
            count += 1
    return count


async def eventually(check: Callable[[], bool], *, timeout: float) -> None:
    """Poll a plain condition (for stand-ins with no event to wait on) until it holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout} s waiting for {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.05)
