"""Health, readiness, Prometheus metrics and a small status page (aiohttp.web)."""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Protocol, TypedDict

from aiohttp import web

from bridge.dispatch.health import SinkState
from bridge.ops.metrics import Metrics
from bridge.ops.preflight import cannot_listen
from bridge.store import QueueStatus, SinkQueue

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class Problem(TypedDict):
    """One reason the bridge is not ready: which check, since when (ISO-8601), and why."""

    check: str
    since: str | None
    detail: str | None


class StatusSource(Protocol):
    """What these pages read of a running bridge (the daemon implements it)."""

    @property
    def metrics(self) -> Metrics: ...

    def readiness_problems(self) -> list[Problem]:
        """Why the bridge is not ready; empty when it is."""
        ...

    def sink_states(self) -> dict[str, SinkState]:
        """Each enabled sink's state: sending, retrying, degraded or paused, since when, why."""
        ...

    async def queue_status(self) -> QueueStatus | None:
        """The store's counts; None while the store is not open yet."""
        ...

    async def recent_errors(self) -> list[dict[str, object]]: ...

    async def recent_events(self) -> list[dict[str, object]]: ...

    async def instances(self) -> list[dict[str, object]]:
        """The bridges sharing the store (PostgreSQL): id, host, heartbeat_at, mqtt_connected,
        stopped_at, claims; empty for a bridge on its own SQLite file."""
        ...


SOURCE = web.AppKey("source", StatusSource)


async def healthz(_request: web.Request) -> web.Response:
    # Answering at all proves the event loop is responsive.
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = request.app[SOURCE].readiness_problems()
    body = {"ready": not problems, "problems": problems}
    return web.json_response(body, status=503 if problems else 200)


async def metrics(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    status = await source.queue_status()
    if status is not None:
        source.metrics.set_queue(status)
    return web.Response(
        body=source.metrics.render(), headers={"Content-Type": CONTENT_TYPE_METRICS}
    )


async def status_page(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    status = await source.queue_status()
    if status is None:
        return web.Response(text="starting", status=503)
    page = render_status_page(
        source.sink_states(),
        status,
        await source.recent_errors(),
        await source.recent_events(),
        source.readiness_problems(),
        instances=await source.instances(),
    )
    return web.Response(text=page, content_type="text/html")


def _cell(value: object) -> str:
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _table(headers: list[str], rows: list[list[object]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def describe(state: SinkState) -> str:
    """A sink's state in words: "degraded since 2026-11-30 10:02:11 UTC: HTTP 503"."""
    text = state["state"]
    if state["since"] is not None:
        since = datetime.fromtimestamp(state["since"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        text += f" since {since}"
    if state["last_error"]:
        text += f": {state['last_error']}"
    return text


def render_status_page(
    sink_states: dict[str, SinkState],
    status: QueueStatus,
    errors: list[dict[str, object]],
    events: list[dict[str, object]],
    problems: list[Problem],
    *,
    instances: list[dict[str, object]] | None = None,
) -> str:
    sink_rows: list[list[object]] = []
    for name, state in sink_states.items():
        entry: SinkQueue = status["sinks"].get(name, {"states": {}, "oldest_pending_seconds": None})
        states = entry["states"]
        age = entry["oldest_pending_seconds"]
        sink_rows.append(
            [
                name,
                describe(state),
                states.get("pending", 0) + states.get("inflight", 0),
                states.get("unmapped", 0),
                states.get("held", 0),
                states.get("dead", 0),
                states.get("delivered", 0),
                "-" if age is None else f"{age:.0f} s",
            ]
        )
    ready = (
        "ready"
        if not problems
        else "NOT READY: " + "; ".join(f"{p['check']} ({p['detail']})" for p in problems)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clockin-bridge</title>
<meta http-equiv="refresh" content="10">
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}</style></head>
<body><h1>clockin-bridge</h1>
<p id="readiness">{html.escape(ready)}</p>
<h2>Sinks</h2>
{
        _table(
            ["sink", "state", "queued", "unmapped", "held", "dead", "delivered", "oldest pending"],
            sink_rows,
            "sinks",
        )
    }
<p>Rejected payloads: <span id="rejected">{status["rejected"]}</span>
(<span id="rejected-pruned">{status["rejected_pruned"]}</span> older ones pruned to stay under
store.rejected_max_mb)</p>
{_instances_section(instances or [])}
<h2>Last errors</h2>
{
        _table(
            ["sink", "state", "attempts", "error", "event"],
            [[e["sink"], e["state"], e["attempts"], e["last_error"], e["key"]] for e in errors],
            "errors",
        )
    }
<h2>Recent events</h2>
<p>inferred: the terminal sent no direction; the bridge chose it (config: inference).
Stored events with an inferred direction:
<span id="inferred">{status["inferred"]}</span></p>
{
        _table(
            ["event", "terminal", "who", "action", "inferred", "time (UTC)", "status"],
            [
                [
                    e["key"],
                    e["terminal"],
                    e["subject"],
                    e["action"],
                    "inferred" if e.get("action_inferred") else "",
                    e["event_time"],
                    e["status"],
                ]
                for e in events
            ],
            "events",
        )
    }
</body></html>
"""


def _instances_section(instances: list[dict[str, object]]) -> str:
    """The bridges sharing the store, when there are several (PostgreSQL)."""
    if not instances:
        return ""
    rows: list[list[object]] = [
        [
            i["id"],
            i["host"],
            _utc(i["heartbeat_at"]),
            "yes" if i["mqtt_connected"] else "no",
            i["claims"],
            _utc(i["stopped_at"]) if i["stopped_at"] is not None else "",
        ]
        for i in instances
    ]
    headers = ["instance", "host", "last heartbeat", "broker", "claims held", "stopped"]
    return "<h2>Instances</h2>\n" + _table(headers, rows, "instances")


def _utc(moment: object) -> str:
    if not isinstance(moment, int | float):
        return ""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@contextlib.asynccontextmanager
async def serving(source: StatusSource, *, host: str, port: int) -> AsyncIterator[int]:
    """Serve until the context ends; yields the bound port (useful with port 0)."""
    app = web.Application()
    app[SOURCE] = source
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", status_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:  # taken since `run` checked it: the same one line, exit 2
        await runner.cleanup()
        address = f"{host}:{port}"
        raise cannot_listen(address, err) from None
    try:
        bound = runner.addresses  # aiohttp's public view of the listening sockets
        yield int(bound[0][1]) if bound else port
    finally:
        await runner.cleanup()
