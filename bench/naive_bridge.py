"""The simplest thing a site would otherwise run: subscribe, PUT each message to Go2Clock.

paho-mqtt with a persistent session (so it can catch up after a restart), QoS 1, and a plain
urllib PUT per message in the network thread (requests is not installed; urllib is what the
standard library offers). paho sends the PUBACK when on_message returns, whatever the PUT did:
no durable queue, no retry, no duplicate detection, no per-person ordering beyond "one at a
time", no directory reload. Badge -> userid is a dict loaded once from directory.csv.

    python bench/naive_bridge.py --port P --url http://127.0.0.1:N --key KEY --directory CSV
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--directory", required=True)
    args = parser.parse_args()
    with Path(args.directory).open(newline="") as f:
        users = {row["badge"]: row["userid"] for row in csv.DictReader(f)}
    checktypes = {"in": 0, "out": 1, "break_start": 2, "break_end": 3}

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            event = json.loads(message.payload)
            when = datetime.fromisoformat(event["time"]).strftime("%Y-%m-%dT%H:%M:%S")
            form = {
                "userid": users[event["badge"]],
                "checktime": when,
                "checktype": checktypes[event.get("action", "in")],
                "deviceserial": message.topic.split("/")[1],
            }
            if "note" in event:
                form["eventdescription"] = event["note"]
            request = urllib.request.Request(  # noqa: S310 - our fake's http URL
                args.url + "/api/punches/",
                method="PUT",
                data=urllib.parse.urlencode(form).encode(),
                headers={"APIKEY": args.key},
            )
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - our fake's http URL
                response.read()
        except Exception as err:  # noqa: BLE001 - what a naive bridge does: print, lose the message
            print(f"failed: {err}", file=sys.stderr)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench-naive", clean_session=False
    )
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("clockin/+/events", qos=1)
    client.connect("127.0.0.1", args.port)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_forever()


if __name__ == "__main__":
    main()
