"""Health, readiness, Prometheus metrics and a small status page (aiohttp.web)."""

from __future__ import annotations

import contextlib
import html
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from bridge.preflight import cannot_listen

if TYPE_CHECKING:
    from bridge.app import Bridge

BRIDGE = web.AppKey("bridge", "Bridge")
CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def readiness_problems(bridge: Bridge) -> list[dict[str, object]]:
    """Why the bridge is not ready, each with since when; empty when it is."""
    problems: list[dict[str, object]] = []
    ingest, store = bridge.ingest, bridge.store
    if ingest is None or not ingest.connected.is_set():
        since = ingest.disconnected_since if ingest else None
        detail = ingest.last_error if ingest else "starting"
        problems.append({"check": "mqtt", "since": _iso(since), "detail": detail})
    if store is None:
        problems.append({"check": "database", "since": None, "detail": "not open yet"})
    elif store.write_error is not None:
        error, since = store.write_error
        problems.append({"check": "database", "since": _iso(since), "detail": error})
    for name, dispatcher in bridge.dispatchers.items():
        if dispatcher.paused_since is not None:
            problems.append(
                {
                    "check": f"sink:{name}",
                    "since": _iso(dispatcher.paused_since),
                    "detail": "paused: credentials refused",
                }
            )
    return problems


async def healthz(request: web.Request) -> web.Response:
    # Answering at all proves the event loop is responsive.
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = readiness_problems(request.app[BRIDGE])
    body = {"ready": not problems, "problems": problems}
    return web.json_response(body, status=503 if problems else 200)


async def metrics(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE]
    if bridge.store is not None:
        bridge.metrics.set_queue(await bridge.store.status(now=time.time()))
    return web.Response(
        body=bridge.metrics.render(), headers={"Content-Type": CONTENT_TYPE_METRICS}
    )


async def status_page(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE]
    if bridge.store is None:
        return web.Response(text="starting", status=503)
    status = await bridge.store.status(now=time.time())
    page = render_status_page(
        bridge,
        status,
        await bridge.store.recent_errors(),
        await bridge.store.recent_events(),
        readiness_problems(bridge),
    )
    return web.Response(text=page, content_type="text/html")


def _cell(value: object) -> str:
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _table(headers: list[str], rows: list[list[object]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def render_status_page(
    bridge: Bridge,
    status: dict[str, object],
    errors: list[dict[str, object]],
    events: list[dict[str, object]],
    problems: list[dict[str, object]],
) -> str:
    sinks = status["sinks"]
    assert isinstance(sinks, dict)
    sink_rows = []
    for name, dispatcher in bridge.dispatchers.items():
        entry = sinks.get(name, {"states": {}, "oldest_pending_seconds": None})
        states = entry["states"]
        age = entry["oldest_pending_seconds"]
        sink_rows.append(
            [
                name,
                "paused" if dispatcher.paused_since else "running",
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
<h2>Last errors</h2>
{
        _table(
            ["sink", "state", "attempts", "error", "event"],
            [[e["sink"], e["state"], e["attempts"], e["last_error"], e["key"]] for e in errors],
            "errors",
        )
    }
<h2>Recent events</h2>
{
        _table(
            ["event", "terminal", "who", "action", "time (UTC)", "status"],
            [
                [e["key"], e["terminal"], e["subject"], e["action"], e["event_time"], e["status"]]
                for e in events
            ],
            "events",
        )
    }
</body></html>
"""


@contextlib.asynccontextmanager
async def serving(bridge: Bridge, *, host: str, port: int) -> AsyncIterator[int]:
    """Serve until the context ends; yields the bound port (useful with port 0)."""
    app = web.Application()
    app[BRIDGE] = bridge
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
        raise cannot_listen(f"{host}:{port}", err) from None
    try:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        yield sockets[0].getsockname()[1] if sockets else port
    finally:
        await runner.cleanup()
