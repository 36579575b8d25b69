"""Serving a simulated vendor: one aiohttp app on a host and port, for tests and the demo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serving(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve `app` on host:port (0: a free port) and yield its base URL."""
    # a short shutdown_timeout: handlers held by a fault switch (delay) are cancelled, not awaited
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 literal
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
