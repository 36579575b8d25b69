"""Plays the demo: broker, fake Go2Clock, bridge and terminal in one process and one event loop."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiomqtt
from pydantic import SecretStr

from bridge.app import Bridge
from bridge.config import (
    DirectoryConfig,
    Go2ClockConfig,
    HttpConfig,
    LogConfig,
    MqttConfig,
    RetryConfig,
    Settings,
    SinksConfig,
    SiteConfig,
    StoreConfig,
)
from bridge.demo.broker import HOST, MISSING_EXTRA, amqtt_available, embedded_broker
from bridge.demo.report import Outcome, problems, summary_lines
from bridge.demo.scenario import (
    BAD_PAYLOAD,
    EVERYONE,
    FATOU,
    MORNING,
    SITE_TZ,
    STAFF,
    TOPIC,
    Expected,
    Fault,
    Kind,
    Step,
    directory_csv,
    expected,
    payload,
)
from bridge.ops.logs import configure_logging
from bridge.vendors.go2clock.simulator import FakeGo2Clock, running_fake_go2clock

API_KEY = "demo-go2clock-key-not-secret"
PACE_SECONDS = 0.8  # between two swipes at speed 1
SETTLE_TIMEOUT = 60.0
OUTAGE_REQUESTS = 3

Status = Mapping[str, Any]


class DemoError(Exception):
    """The demo cannot go on (the bridge stopped, or something never settled)."""


def say(text: str) -> None:
    print(f"\n>> {text}", flush=True)


def demo_settings(workdir: Path, *, broker_port: int, go2clock_url: str) -> Settings:
    # model_construct from validated sections: the environment (CLOCKIN_*) must not be able to
    # point the demo's fake punches at a real Go2Clock account.
    return Settings.model_construct(
        site=SiteConfig(timezone=SITE_TZ.key),
        mqtt=MqttConfig(host=HOST, port=broker_port, client_id="clockin-demo", keepalive=10),
        store=StoreConfig(path=workdir / "bridge.db"),
        directory=DirectoryConfig(path=workdir / "directory.csv", reload_seconds=0.5),
        retry=RetryConfig(initial_seconds=0.5, max_seconds=2.0),
        sinks=SinksConfig(
            go2clock=Go2ClockConfig(
                base_url=go2clock_url, api_key=SecretStr(API_KEY), timeout_seconds=5
            )
        ),
        log=LogConfig(level="info", format="console"),
        # Any free port: another bridge (or anything else) on 9108 must not stop the demo.
        http=HttpConfig(listen=f"{HOST}:0"),
    )


def write_atomically(path: Path, text: str) -> None:
    """Write a sibling file and rename it over `path`, as an editor or a sync job would."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


class Stage:
    """The running pieces the terminal's script pokes at and waits on."""

    def __init__(self, *, bridge: Bridge, running: asyncio.Task[None], fake: FakeGo2Clock) -> None:
        self.bridge, self.running, self.fake = bridge, running, fake

    async def status(self) -> Status:
        if self.running.done() or self.bridge.store is None:
            msg = "the bridge stopped before the demo was over"
            raise DemoError(msg)
        return await self.bridge.store.status(now=time.time())

    # ASYNC109: a timeout argument reads better at the many call sites than asyncio.timeout()
    async def until(
        self,
        what: str,
        done: Callable[[Status], object],
        timeout: float = 15.0,  # noqa: ASYNC109
    ) -> Status:
        """Poll the store until `done(status)`; DemoError naming `what` after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not done(status := await self.status()):
            if time.monotonic() > deadline:
                msg = f"gave up waiting for {what} after {timeout:g} s (status: {status})"
                raise DemoError(msg)
            await asyncio.sleep(0.05)
        return status


def go2clock_states(status: Status) -> Mapping[str, int]:
    entry = status["sinks"].get("go2clock", {})
    return dict(entry.get("states", {}))


def quiet(status: Status) -> bool:
    """Nothing waiting for Go2Clock except what waits for the directory."""
    states = go2clock_states(status)
    return not states.get("pending") and not states.get("inflight")


def stored(status: Status) -> int:
    events: int = sum(status["events"].values())
    return events + int(status["rejected"])


async def inject(stage: Stage, fault: Fault) -> None:
    if fault is Fault.NONE:
        return
    await stage.until("deliveries to settle", quiet)  # so the fault hits the next swipe
    if fault is Fault.LOST_ANSWER:
        say("Go2Clock will store the next punch but lose its answer: a resend must not double it")
        stage.fake.lose_answers = 1
    else:
        say(f"Go2Clock outage: the next {OUTAGE_REQUESTS} requests get HTTP 503")
        stage.fake.fail_5xx = OUTAGE_REQUESTS


def describe(step: Step) -> str:
    if step.person is None or step.action is None or step.at is None:
        return step.note
    text = f"{step.at:%H:%M:%S} {step.person.name} swipes {step.action.value}"
    return f"{text} ({step.note})" if step.note else text


async def welcome_newcomer(stage: Stage, directory: Path, pause: float) -> None:
    """The unknown badge is held back until the directory lists it; then it goes out."""
    await stage.until("the unknown badge to be held", lambda s: go2clock_states(s).get("unmapped"))
    say(f"{FATOU.name}'s swipe is stored but held back: her badge is not in the directory yet")
    await asyncio.sleep(pause)
    say(f"HR adds {FATOU.name} ({FATOU.badge} -> {FATOU.userid}) to directory.csv")
    await asyncio.to_thread(write_atomically, directory, directory_csv(EVERYONE))
    await stage.until("the directory reload", lambda s: not go2clock_states(s).get("unmapped"))


async def play(
    stage: Stage, *, port: int, directory: Path, speed: float, day: date, want: Expected
) -> None:
    """The terminal's morning, then wait until every delivery has settled."""
    pause = PACE_SECONDS / speed
    last = b""
    async with aiomqtt.Client(HOST, port, identifier="demo-terminal") as terminal:
        for number, step in enumerate(MORNING, start=101):
            await inject(stage, step.fault)
            if step.kind is Kind.RESEND:
                message = last
            elif step.kind is Kind.BAD:
                message = BAD_PAYLOAD
            else:
                message = payload(step, number=number, day=day)
            say(f"terminal: {describe(step)}")
            await terminal.publish(TOPIC, message, qos=1)
            last = message
            await asyncio.sleep(pause)
            if step.kind is Kind.UNKNOWN:
                await welcome_newcomer(stage, directory, pause)
    say("the terminal is done; waiting for every delivery to settle")
    await stage.until(
        "every message to be stored and delivered",
        lambda s: (
            stored(s) >= want.messages - want.resends
            and quiet(s)
            and not go2clock_states(s).get("unmapped")
        ),
        timeout=SETTLE_TIMEOUT,
    )


async def run_bridge(
    settings: Settings, fake: FakeGo2Clock, *, port: int, speed: float, day: date, want: Expected
) -> Outcome:
    """Run the bridge, play the morning against it, and stop it cleanly."""
    bridge = Bridge(settings)
    failure: DemoError | None = None
    async with asyncio.TaskGroup() as tg:
        running = tg.create_task(bridge.run(), name="bridge")
        stage = Stage(bridge=bridge, running=running, fake=fake)
        try:
            await wait_ready(stage)
            say(f"status page and /metrics on http://{HOST}:{bridge.http_port}/")
            directory = settings.directory.path
            assert directory is not None
            await play(stage, port=port, directory=directory, speed=speed, day=day, want=want)
            outcome = Outcome(
                status=await stage.status(),
                counts=dict(bridge.dispatchers["go2clock"].counts),
                records=list(fake.records),
                checktypes=settings.sinks.go2clock.checktypes,
            )
        except DemoError as err:
            failure = err  # raised after the task group, so it is not wrapped in a group
        finally:
            bridge.stop()
    if failure is not None:
        raise failure
    return outcome


async def wait_ready(stage: Stage) -> None:
    try:
        async with asyncio.timeout(15):
            await stage.bridge.ready.wait()
    except TimeoutError:
        msg = "the bridge did not connect to the embedded broker within 15 s"
        raise DemoError(msg) from None


async def demo(speed: float) -> int:
    configure_logging(level="info", fmt="console", secrets=[API_KEY])
    fake = FakeGo2Clock(api_key=API_KEY)
    day = datetime.now(SITE_TZ).date()  # "this morning", fixed once for the whole run
    want = expected(MORNING, day=day, account_tz=SITE_TZ)
    with tempfile.TemporaryDirectory(prefix="clockin-demo-") as tmp:
        workdir = Path(tmp)
        write_atomically(workdir / "directory.csv", directory_csv(STAFF))
        say(f"demo files in {workdir}; directory.csv lists {', '.join(p.name for p in STAFF)}")
        async with embedded_broker() as port, running_fake_go2clock(fake) as url:
            say(f"embedded MQTT broker on {HOST}:{port}, simulated Go2Clock at {url}")
            settings = demo_settings(workdir, broker_port=port, go2clock_url=url)
            try:
                outcome = await run_bridge(
                    settings, fake, port=port, speed=speed, day=day, want=want
                )
            except DemoError as err:
                print(f"\nclockin-bridge demo failed: {err}", file=sys.stderr)
                return 1
    print("\n".join(summary_lines(outcome, want)), flush=True)
    found = problems(outcome, want)
    if found:
        print("\nFAILED: " + "\n        ".join(found), flush=True)
        return 1
    print("\nOK: Go2Clock holds every accepted swipe exactly once.", flush=True)
    return 0


def run_demo(*, speed: float = 1.0) -> int:
    """`clockin-bridge demo`: 0 when Go2Clock ends up with every accepted swipe exactly once."""
    if not speed > 0:
        print("clockin-bridge: --speed must be a positive number", file=sys.stderr)
        return 2
    if not amqtt_available():
        print(f"clockin-bridge: {MISSING_EXTRA}", file=sys.stderr)
        return 1
    return asyncio.run(demo(speed))
