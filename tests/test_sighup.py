"""SIGHUP re-reads the directory, the credentials and the log level of a running bridge,
without losing or re-sending events."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import yaml

from tests.broker import Mosquitto
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.faults.common import logged, start_bridge
from tests.harness import API_KEY, canonical, publish, wait_until, write_config, write_directory

TOPIC = "clockin/yard/events"


async def test_sighup_reloads_credentials_directory_and_level(broker: Mosquitto, tmp_path: Path):
    key_file = tmp_path / "go2clock_api_key"
    key_file.write_text("an-old-revoked-key\n")
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        config = write_config(
            tmp_path,
            broker_port=broker.port,
            go2clock_url=url,
            extra={
                "directory": {"reload_seconds": 3600},  # only SIGHUP reloads it in this test
                "retry": {"pause_probe_seconds": 3600},  # and only SIGHUP ends the pause
                "sinks": {"go2clock": {"api_key": None, "api_key_file": str(key_file)}},
            },
        )
        log = tmp_path / "bridge.log"
        process = await start_bridge(config, log)
        try:
            await wait_until(logged(log, "bridge.ready"), timeout=20, what="ready")
            await publish(broker.port, [(TOPIC, canonical(n)) for n in range(10)])
            await publish(broker.port, [(TOPIC, canonical(10, badge="LATECOMER"))])
            await wait_until(logged(log, "sink.paused"), timeout=10, what="paused")
            assert fake.records == []

            key_file.write_text(API_KEY + "\n")  # the operator fixes the credential,
            write_directory(tmp_path / "directory.csv", {"B0001": "1001", "LATECOMER": "777"})
            data = yaml.safe_load(config.read_text())
            data["log"]["level"] = "debug"  # asks for more detail,
            data["mqtt"]["keepalive"] = 45  # and changes what only a restart applies,
            config.write_text(yaml.safe_dump(data))
            process.send_signal(signal.SIGHUP)  # and tells the bridge

            await fake.wait_for_records(11, timeout=20)
            await wait_until(logged(log, "config.reloaded"), timeout=5, what="reloaded")
            await asyncio.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
    text = log.read_text()
    assert code == 0, text[-2000:]
    punches = fake.punches_by_key()
    assert len(punches) == 11
    assert max(punches.values()) == 1
    assert ("777", "2026-11-23T06:01:10") in punches  # the latecomer, mapped by the reload
    assert '"level": "debug"' in text  # the new level took effect
    # ... and the change SIGHUP cannot apply is said, not silently ignored; new credentials
    # alone are no such change.
    restart = [line for line in text.splitlines() if '"config.restart_needed"' in line]
    assert len(restart) == 1
    assert '"changed": ["mqtt"]' in restart[0]
    assert "an-old-revoked-key" not in text
    assert API_KEY not in text
