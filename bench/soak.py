"""Benchmark: a soak against a flaky vendor. Is a vendor answering a few percent 5xx still
delivered to at the arrival rate, or treated as down?

A paho publisher (its own process) publishes live QoS 1 events at a fixed rate (default
50/s, each badge a different person within 40 s) through a real mosquitto into the bridge
(a subprocess, log level warning, JSON logs in bridge.log); the fake Go2Clock (in this
process) answers after 20 ms, and answers HTTP 500 to a share of the PUTs chosen at random.
Scenarios, one after the other, each with its own broker, database and bridge:

- reference: 0 % 500s (what the rig delivers when nothing fails);
- flaky: 10 % 500s with the default retry settings;
- old rule: 10 % 500s with `retry.outage_window: 1, outage_failure_ratio: 1.0` (every failed
  answer is an outage: the behaviour before the window existed), unless --skip-old-rule;
- down: 100 % 500s for --down-seconds, then 0 %: the sink must go to one probe at a time
  (most PUTs in flight at once, after the outage started) and recover.

Every --sample-seconds: events stored (arrived), punches created at the fake (delivered) and
the backlog (deliveries pending or in flight). Reported per scenario: delivered / arrived when
publishing ends, the ratio to the reference, the backlog's growth over the second half, the
longest gap between two PUTs (a stall), and the outage lines in the bridge's log.

    PYTHONPATH=. python bench/soak.py [--seconds 600] [--rate 50] [--share 0.10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from bench import common
from bridge.vendors.go2clock.simulator import running_fake_go2clock

LATENCY = 0.020
CONCURRENCY = 4
PEOPLE = 2000
BACKLOG_SQL = "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'inflight')"
OUTAGE_EVENTS = ("sink.outage_started", "sink.outage_ended", "sink.outage_summary")


class CountingFake(common.FastFakeGo2Clock):
    """The fast fake Go2Clock, also noting each PUT's start and end (monotonic) so the most
    requests in flight at once can be read afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[tuple[float, float]] = []
        self.back_at = float("inf")  # monotonic: when the failures were switched off

    async def put_punch(self, request: web.Request) -> web.StreamResponse:
        began = time.monotonic()
        try:
            return await super().put_punch(request)
        finally:
            self.spans.append((began, time.monotonic()))

    def most_in_flight(self, *, after: float = 0.0, before: float = float("inf")) -> int:
        """The most PUTs at the fake at once, among those that started between the two."""
        spans = [(start, end) for start, end in self.spans if after < start < before]
        edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        most = current = 0
        for _, step in edges:
            current += step
            most = max(most, current)
        return most


@dataclass
class Outcome:
    name: str
    share: float
    arrived: int = 0
    delivered: int = 0
    seconds: float = 0.0
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    answered_500: int = 0
    longest_gap: float = 0.0
    drained_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.delivered / self.arrived if self.arrived else float("nan")

    def growth_per_second(self) -> float:
        """The backlog's slope (least squares) over the second half of the publishing."""
        half = [(t, backlog) for t, _, _, backlog in self.samples if t >= self.seconds / 2]
        if len(half) < 2:
            return float("nan")
        mean_t = sum(t for t, _ in half) / len(half)
        mean_b = sum(b for _, b in half) / len(half)
        top = sum((t - mean_t) * (b - mean_b) for t, b in half)
        bottom = sum((t - mean_t) ** 2 for t, _ in half)
        return top / bottom if bottom else float("nan")


def configure(work: Path, broker_port: int, url: str, retry: dict[str, Any]) -> tuple[Path, int]:
    config, http_port = common.write_config(
        work, broker_port=broker_port, people=PEOPLE, go2clock_url=url, concurrency=CONCURRENCY
    )
    settings = yaml.safe_load(config.read_text())
    settings["retry"].update(retry)
    config.write_text(yaml.safe_dump(settings))
    return config, http_port


def outage_lines(log: Path) -> tuple[dict[str, int], float | None]:
    """How many outage lines of each kind the bridge logged; when the first outage started."""
    counts = dict.fromkeys(OUTAGE_EVENTS, 0)
    first = None
    for line in log.read_text(errors="replace").splitlines():
        if '"sink.outage' not in line:
            continue
        entry = json.loads(line)
        counts[entry["event"]] = counts.get(entry["event"], 0) + 1
        if entry["event"] == "sink.outage_started" and first is None:
            first = entry.get("timestamp")
    return counts, first


async def sample_until(
    done: asyncio.Future[Any], fake: CountingFake, db: Path, every: float, began: float
) -> list[tuple[float, int, int, int]]:
    samples = []
    while True:
        finished = done.done()
        arrived = common.db_max_id(db) if db.exists() else 0
        backlog = common.db_count(db, BACKLOG_SQL) if db.exists() else 0
        samples.append((time.monotonic() - began, arrived, fake.created_count, backlog))
        if finished:
            return samples
        await asyncio.wait({done}, timeout=every)


async def drain(db: Path, limit: float) -> float | None:
    """Seconds until the backlog is empty after publishing ends (None: not within limit)."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if common.db_count(db, BACKLOG_SQL) == 0:
            return time.monotonic() - began
        await asyncio.sleep(0.5)
    return None


async def scenario(
    args: argparse.Namespace,
    name: str,
    share: float,
    *,
    retry: dict[str, Any] | None = None,
    seconds: float | None = None,
    then_share: float | None = None,
) -> Outcome:
    seconds = args.seconds if seconds is None else seconds
    work = common.workdir(f"soak-{name.replace(' ', '-')}")
    outcome = Outcome(name, share, seconds=seconds)
    fake = CountingFake()
    fake.delay_seconds = args.latency
    fake.fail_500_share = share
    count = int(args.rate * seconds)
    with common.broker(work) as broker:
        async with running_fake_go2clock(fake) as url:
            config, http_port = configure(work, broker.port, url, retry or {})
            with common.running_bridge(config, http_port) as bridge:
                await bridge.wait_ready()
                began = time.monotonic()
                publishing = asyncio.ensure_future(
                    common.publish_async(
                        broker.port,
                        count,
                        rate=args.rate,
                        people=PEOPLE,
                        time_mode="now",
                        client_id=f"soak-{name.replace(' ', '-')}",
                    )
                )
                outcome.samples = await sample_until(
                    publishing, fake, work / "bridge.db", args.sample_seconds, began
                )
                published = publishing.result()
                outcome.seconds = time.monotonic() - began
                _, outcome.arrived, outcome.delivered, _ = outcome.samples[-1]
                outcome.extra["published_per_second"] = round(
                    published["published"] / published["seconds"], 1
                )
                if then_share is not None:  # the vendor comes back
                    fake.fail_500_share = then_share
                    fake.back_at = time.monotonic()
                outcome.drained_seconds = await drain(work / "bridge.db", args.drain_limit)
                if bridge.process is not None and bridge.process.poll() is not None:
                    msg = f"bridge exited: {bridge.tail()}"
                    raise SystemExit(msg)
    outcome.lines, _ = outage_lines(work / "bridge.log")
    starts = sorted(r["received_at"] for r in fake.requests)
    outcome.requests = len(starts)
    outcome.answered_500 = sum(1 for r in fake.requests if r["answer"] == "http_500")
    outcome.longest_gap = max((b - a for a, b in itertools.pairwise(starts)), default=0)
    ends = sorted(end for _, end in fake.spans)
    if share >= 1.0 and len(ends) >= args.evidence:
        # Once the answers that make up the evidence are in (10 failures of the last 20 by
        # default), every PUT that starts afterwards should be alone at the vendor.
        back = fake.back_at
        outcome.extra["most_in_flight_while_down"] = fake.most_in_flight(before=back)
        outcome.extra["most_in_flight_after_evidence"] = fake.most_in_flight(
            after=ends[args.evidence - 1], before=back
        )
        outcome.extra["most_in_flight_once_back"] = fake.most_in_flight(after=back)
        outcome.extra["puts_while_down"] = outcome.answered_500
    outcome.extra["workdir"] = str(work)
    return outcome


def report(
    args: argparse.Namespace, outcome: Outcome, reference: Outcome | None, every: int
) -> None:
    lines = outcome.lines
    to_reference = outcome.ratio / reference.ratio if reference is not None else 1.0
    drained = (
        f"{outcome.drained_seconds:.1f} s" if outcome.drained_seconds is not None else "NOT drained"
    )
    print(
        f"  {outcome.name} ({outcome.share:.0%} of PUTs answered 500): "
        f"{outcome.arrived} arrived in {outcome.seconds:.0f} s "
        f"({outcome.arrived / outcome.seconds:.1f}/s), {outcome.delivered} delivered by then = "
        f"{outcome.ratio:.1%} of arrived ({to_reference:.1%} of the reference's ratio); "
        f"backlog growth {outcome.growth_per_second():+.2f}/s over the second half, "
        f"max {max(s[3] for s in outcome.samples)}, at the end {outcome.samples[-1][3]}, "
        f"drained {drained} after publishing ended"
    )
    print(
        f"    {outcome.requests} PUTs, {outcome.answered_500} answered 500; longest gap between "
        f"two PUTs {outcome.longest_gap:.2f} s; outage lines: "
        f"{lines.get('sink.outage_started', 0)} started, {lines.get('sink.outage_ended', 0)} "
        f"ended, {lines.get('sink.outage_summary', 0)} summaries"
    )
    if "most_in_flight_after_evidence" in outcome.extra:
        print(
            f"    while down: {outcome.extra['puts_while_down']} PUTs, at most "
            f"{outcome.extra['most_in_flight_while_down']} at the vendor at once, at most "
            f"{outcome.extra['most_in_flight_after_evidence']} among those started after the "
            f"{args.evidence}th failed answer; once back: at most "
            f"{outcome.extra['most_in_flight_once_back']} at once"
        )
    print("    backlog over time (s: arrived / delivered / backlog):")
    shown = outcome.samples[::every] + outcome.samples[-1:]
    row = ", ".join(f"{t:.0f}: {a}/{d}/{b}" for t, a, d, b in shown)
    print(f"      {row}")
    common.result(
        "soak",
        scenario=outcome.name,
        share_500=outcome.share,
        seconds=round(outcome.seconds, 1),
        arrived=outcome.arrived,
        delivered=outcome.delivered,
        ratio=round(outcome.ratio, 4),
        ratio_to_reference=round(to_reference, 4),
        backlog_growth_per_second=round(outcome.growth_per_second(), 3),
        backlog_max=max(s[3] for s in outcome.samples),
        backlog_end=outcome.samples[-1][3],
        drained_seconds=outcome.drained_seconds,
        requests=outcome.requests,
        answered_500=outcome.answered_500,
        longest_gap_seconds=round(outcome.longest_gap, 2),
        outage_lines=outcome.lines,
        **outcome.extra,
    )


async def run(args: argparse.Namespace) -> None:
    common.header("soak: a flaky vendor (a share of 500s) against a fixed arrival rate")
    print(
        f"  {args.rate:g} events/s for {args.seconds:g} s per scenario, {PEOPLE} people, "
        f"fake Go2Clock {args.latency * 1000:g} ms, concurrency {CONCURRENCY}, "
        f"backlog sampled every {args.sample_seconds:g} s"
    )
    every = max(1, round(30 / args.sample_seconds))  # print a sample every ~30 s
    reference = await scenario(args, "reference", 0.0)
    report(args, reference, None, every)
    flaky = await scenario(args, "flaky", args.share)
    report(args, flaky, reference, every)
    if not args.skip_old_rule:
        old = await scenario(
            args,
            "old rule",
            args.share,
            retry={"outage_window": 1, "outage_failure_ratio": 1.0},
        )
        report(args, old, reference, every)
    if not args.skip_down:
        down = await scenario(args, "down", 1.0, seconds=args.down_seconds, then_share=0.0)
        report(args, down, reference, every)
    target = flaky.ratio / reference.ratio >= 0.95 and flaky.lines["sink.outage_started"] < 10
    print(
        f"  target (flaky delivers >= 95 % of the reference's ratio, fewer than 10 outage "
        f"lines): {'met' if target else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="30 s scenarios")
    parser.add_argument("--seconds", type=float, default=600.0, help="publishing per scenario")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s")
    parser.add_argument("--share", type=float, default=0.10, help="PUTs answered 500, flaky")
    parser.add_argument("--latency", type=float, default=LATENCY, help="fake's delay, seconds")
    parser.add_argument("--down-seconds", type=float, default=60.0, help="100 %% 500s, then 0")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--drain-limit", type=float, default=120.0, help="seconds, at most")
    parser.add_argument(
        "--evidence", type=int, default=10, help="failed answers that declare the outage"
    )
    parser.add_argument("--skip-old-rule", action="store_true")
    parser.add_argument("--skip-down", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.down_seconds = min(args.seconds, 30.0), min(args.down_seconds, 20.0)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
