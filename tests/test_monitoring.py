"""The monitoring that ships in deploy/: Prometheus rules that promtool accepts and whose own
unit tests pass, a Grafana dashboard with the panels an operator needs, and every metric either
of them names present in a real bridge's /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

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

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "clockin-bridge.json"
PROMTOOL = shutil.which("promtool")
TOPIC = "clockin/hall/events"
# A loose reading of PromQL: the bridge's metric names, and the label matchers after them.
METRIC = re.compile(r"\bclockin_[a-z_]+")
SELECTOR = re.compile(r"\b(clockin_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Labels Prometheus adds when it scrapes, not the bridge.
TARGET_LABELS = {"instance", "job"}

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed"
    " (Debian's prometheus package; scripts/ensure-test-tools.sh installs it)",
)


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"]]
    return queries


def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_promtool_accepts_the_rules():
    assert "SUCCESS" in _promtool("check", "rules", str(RULES))


@needs_promtool
def test_the_rules_fire_as_their_unit_tests_say():
    assert "SUCCESS" in _promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_severity_for_and_says_what_to_do():
    rules = _rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "ClockinBridgeDown",
        "ClockinSinkPaused",
        "ClockinDeliveriesDelayed",
        "ClockinDeadDeliveries",
        "ClockinMqttDisconnected",
        "ClockinTerminalFlooding",
        "ClockinTerminalLabelOverflow",
        "ClockinStateDiskNearlyFull",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
    text = RULES.read_text()
    for command in ("clockin-bridge status", "dead list", "held list", "rejected list"):
        assert command in text
    assert "node_exporter" in text  # the disk alert says what it needs


def test_dashboard_has_the_panels_an_operator_needs():
    dashboard = _dashboard()
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    assert len(panels) == len(dashboard["panels"]), "panel titles repeat"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    wanted = {
        "Queue depth per sink and state": "clockin_queue_depth",
        "Oldest pending delivery age": "clockin_oldest_pending_seconds",
        "Delivery latency (stored to accepted)": "clockin_delivery_latency_seconds_bucket",
        "Delivery outcomes per sink": "clockin_deliveries_total",
        "Ingest per terminal": "clockin_events_total",
        "MQTT connected": "clockin_mqtt_connected",
        "Sink paused": "clockin_sink_paused",
    }
    for title, metric in wanted.items():
        assert title in panels, f"no panel {title!r}"
        exprs = [target["expr"] for target in panels[title]["targets"]]
        assert any(metric in expr for expr in exprs), f"{title!r} does not show {metric}"
    assert "histogram_quantile" in " ".join(
        target["expr"] for target in panels["Delivery latency (stored to accepted)"]["targets"]
    )
    assert "by (terminal, status)" in panels["Ingest per terminal"]["targets"][0]["expr"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


async def test_every_metric_named_exists_in_a_real_bridges_metrics(
    broker: Mosquitto, tmp_path: Path
):
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(await _scrape_a_busy_bridge(broker, tmp_path)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)

    _check_names("alerts.yml", RULES.read_text(), samples)
    _check_names("clockin-bridge.json", json.dumps(_dashboard_queries(_dashboard())), samples)
    # Each rule about the bridge names at least one of its metrics (the loose parse found it).
    for rule in _rules():
        if "node_filesystem" not in rule["expr"] and not rule["expr"].startswith(("up", "absent")):
            assert METRIC.search(rule["expr"]), rule["alert"]


async def _scrape_a_busy_bridge(broker: Mosquitto, tmp_path: Path) -> str:
    """/metrics of a bridge driven so every family has samples: labelled ones have none until
    used (prometheus_client prints only their # HELP and # TYPE lines)."""
    fake = FakeGo2Clock(api_key=API_KEY)
    async with running_fake_go2clock(fake) as url:
        settings = settings_from(write_config(tmp_path, broker_port=broker.port, go2clock_url=url))
        async with running_bridge(settings) as bridge:
            skewed = {
                "id": "evt-skewed",
                "badge": "B0001",
                "action": "in",
                "time": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            }
            await publish(
                broker.port,
                [(TOPIC, canonical(0)), (TOPIC, b"garbage"), (TOPIC, json.dumps(skewed).encode())],
            )
            await fake.wait_for_records(2, timeout=10)
            # clockin_sink_paused has a sample only once a sink has paused.
            fake.api_key = "rotated-at-the-vendor"
            await publish(broker.port, [(TOPIC, canonical(7))])
            dispatcher = bridge.dispatchers["go2clock"]

            async def paused() -> bool:
                return dispatcher.paused_since is not None

            await wait_until(paused, timeout=10, what="the sink paused")
            await asyncio.sleep(0.2)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{bridge.http_port}/metrics") as response,
            ):
                assert response.status == 200
                return await response.text()


def _check_names(source: str, text: str, samples: dict[str, list[dict[str, str]]]) -> None:
    """Every clockin metric `text` names is exported with samples, with the labels and the
    exact label values its selectors ask for."""
    names = set(METRIC.findall(text))
    assert names, f"no clockin metric found in {source}"
    missing = sorted(names - samples.keys())
    assert not missing, f"{source} names metrics the bridge does not export: {missing}"
    for name, matchers in SELECTOR.findall(text.replace('\\"', '"')):
        exported = samples[name]
        for label, operator, value in MATCHER.findall(matchers):
            if label in TARGET_LABELS:
                continue
            assert any(label in labels for labels in exported), (
                f"{source}: {name} has no label {label!r}"
            )
            if operator == "=":
                assert any(labels.get(label) == value for labels in exported), (
                    f"{source}: {name} never has {label}={value!r}"
                )
