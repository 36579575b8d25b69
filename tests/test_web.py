"""Health, readiness, metrics and the status page of a running bridge."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from bridge.app import Bridge
from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.harness import (
    API_KEY,
    canonical,
    publish,
    running_bridge,
    settings_from,
    wait_until,
    write_config,
)

TOPIC = "clockin/hall/events"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


async def _get(bridge: Bridge, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bridge.http_port}{path}") as response,
    ):
        return response.status, await response.text()


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = (
        rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    )
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in metrics"
    return float(match.group(1))


async def test_health_readiness_and_metrics(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings) as bridge:
            assert (await _get(bridge, "/healthz"))[0] == 200
            status, body = await _get(bridge, "/readyz")
            assert (status, '"ready": true' in body) == (200, True)

            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(5)])
            await publish(broker.port, [(TOPIC, b"garbage")])
            await fake.wait_for_records(5, timeout=10)
            await asyncio.sleep(0.2)
            _, text = await _get(bridge, "/metrics")
            assert _metric(text, "clockin_sink_paused", sink="go2clock") == 0  # not "no data"
            assert (
                _metric(
                    text,
                    "clockin_events_total",
                    format="canonical",
                    status="accepted",
                    terminal="hall",
                )
                == 5
            )
            assert (
                _metric(
                    text,
                    "clockin_events_total",
                    format="canonical",
                    status="rejected",
                    terminal="hall",
                )
                == 1
            )
            assert (
                _metric(text, "clockin_deliveries_total", outcome="delivered", sink="go2clock") == 5
            )
            assert _metric(text, "clockin_queue_depth", sink="go2clock", state="delivered") == 5
            assert _metric(text, "clockin_mqtt_connected") == 1
            assert _metric(text, "clockin_delivery_latency_seconds_count", sink="go2clock") == 5

            # The vendor refuses the key: the sink pauses and readiness says which and since when.
            fake.api_key = "rotated-at-the-vendor"
            await publish(broker.port, [(TOPIC, canonical(7))])
            dispatcher = bridge.dispatchers["go2clock"]
            await wait_until(
                _true(lambda: dispatcher.paused_since is not None), timeout=10, what="paused"
            )
            status, body = await _get(bridge, "/readyz")
            assert status == 503
            assert '"check": "sink:go2clock"' in body
            assert '"since": "20' in body
            _, text = await _get(bridge, "/metrics")
            assert _metric(text, "clockin_sink_paused", sink="go2clock") == 1

            # The broker goes away: readiness names MQTT too.
            await asyncio.to_thread(broker.stop)
            await wait_until(
                _true(lambda: not bridge.ingest.connected.is_set()), timeout=10, what="disconnected"
            )
            status, body = await _get(bridge, "/readyz")
            assert status == 503
            assert '"check": "mqtt"' in body
            assert (await _get(bridge, "/healthz"))[0] == 200


def _true(check):
    async def predicate() -> bool:
        return bool(check())

    return predicate


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (scripts/ensure-test-tools.sh installs it)",
)
async def test_status_page_in_headless_chromium(broker: Mosquitto, tmp_path: Path):
    fake = FakeGo2Clock(api_key=API_KEY)
    fake.invalid_userids = {"1002"}
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings) as bridge:
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(4)])
            await publish(broker.port, [(TOPIC, b"{not json")])
            await fake.wait_for_records(3, timeout=10)
            await asyncio.sleep(0.3)
            dom = await asyncio.to_thread(
                _dump_dom, f"http://127.0.0.1:{bridge.http_port}/", tmp_path / "chromium"
            )
    sinks = _rows(dom, "sinks")
    assert sinks[0][:2] == ["go2clock", "sending"]
    assert sinks[0][5:7] == ["1", "3"]  # dead, delivered
    assert re.search(r'<span id="rejected">1</span>', dom)
    errors = _rows(dom, "errors")
    assert any("Validation Error" in cell for row in errors for cell in row)
    assert len(_rows(dom, "events")) == 4


def _dump_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def _rows(dom: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', dom, re.DOTALL)
    assert table, f"table {table_id} missing"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.DOTALL)
    return [re.findall(r"<td>(.*?)</td>", row, re.DOTALL) for row in rows[1:]]
