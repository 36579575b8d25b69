"""A reference of bench/io_per_event.py: the least CPU the bridge's own libraries take to carry a
swipe, with nothing of the bridge in between.

One asyncio process subscribes with aiomqtt (QoS 1; paho acknowledges on receipt) and, for each
message, one at a time:
- `put`: parses the JSON and sends one Go2Clock PUT with aiohttp (a kept-alive connection),
  reading the answer: what any bridge on this stack does per swipe, at the least;
- `naive`: the same, plus what the bridge also does per swipe, each in the plainest way: an
  aiosqlite insert and commit (WAL, synchronous=FULL) and a QoS 1 feedback message through
  aiomqtt's publish.

Run as its own process by the bench, which reads its CPU from /proc as it does the bridge's.
Prints READY once subscribed and DONE after --count messages.

    GO2CLOCK_API_KEY=KEY python bench/stack_floor.py --port P --url URL --db PATH --count N \
        --mode put|naive
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import aiohttp
import aiomqtt
import aiosqlite

TOPIC = "clockin/+/events"


async def carry(args: argparse.Namespace) -> None:
    naive = args.mode == "naive"
    async with (
        aiosqlite.connect(args.db, isolation_level=None) as db,
        aiohttp.ClientSession() as http,
        aiomqtt.Client("127.0.0.1", args.port, identifier="stack-floor") as mqtt,
    ):
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body TEXT)")
        await mqtt.subscribe(TOPIC, qos=1)
        headers = {"APIKEY": os.environ["GO2CLOCK_API_KEY"]}
        print("READY", flush=True)
        done = 0
        async for message in mqtt.messages:
            raw = message.payload
            assert isinstance(raw, bytes)  # paho hands over bytes
            swipe = json.loads(raw)
            if naive:
                await db.execute("INSERT INTO events (body) VALUES (?)", (raw.decode(),))
                await db.commit()
                answer = {"id": swipe["id"], "status": "accepted"}
                await mqtt.publish("clockin/floor/ack", json.dumps(answer), qos=1)
            form = {
                "userid": str(10_000 + int(swipe["badge"][1:])),
                "checktime": swipe["time"][:19],
                "checktype": "0" if swipe["action"] == "in" else "1",
            }
            async with http.put(f"{args.url}/api/punches/", data=form, headers=headers) as reply:
                await reply.read()
            done += 1
            if done == args.count:
                print("DONE", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mode", choices=["put", "naive"], required=True)
    asyncio.run(carry(parser.parse_args()))


if __name__ == "__main__":
    main()
