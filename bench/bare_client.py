"""The drain's reference: a bare aiohttp client PUTting punches to the fake Go2Clock with C
requests in flight, nothing else (no queue, no SQLite, no MQTT). Run as its own process, like
the bridge, so the fake keeps the benchmark process to itself; what it reaches is what this
machine, this fake and aiohttp allow at that concurrency and latency.

    python bench/bare_client.py --url http://127.0.0.1:N --key KEY --count N --concurrency C

Prints one JSON line: requests, seconds, rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import aiohttp


async def run(url: str, key: str, count: int, concurrency: int) -> dict[str, float]:
    base = datetime(2026, 1, 5, tzinfo=UTC)
    numbers = iter(range(count))
    headers = {"APIKEY": key, "Content-Type": "application/x-www-form-urlencoded"}

    async def worker(session: aiohttp.ClientSession) -> None:
        for n in numbers:
            form = {
                "userid": f"bare-{n % 2000}",
                "checktime": (base + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S"),
                "checktype": "0",
            }
            async with session.put(
                f"{url}/api/punches/", data=urlencode(form).encode(), headers=headers
            ) as response:
                await response.read()

    async with aiohttp.ClientSession() as session:
        began = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.monotonic() - began
    return {"requests": count, "seconds": round(seconds, 2), "rate": round(count / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.key, args.count, args.concurrency))))


if __name__ == "__main__":
    main()
