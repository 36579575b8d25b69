"""Per-vendor differences for the sink contract suite (tests/test_sink_contract.py).

One SinkAdapter per sink says how to build the sink against its fake, which job books something,
how to make the fake refuse credentials, fail for good, fail for now or lose an answer, and how
many bookings the vendor holds for a person. The contract tests stay the same for all three.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr

from bridge.config import Go2ClockConfig, McTimeConfig, TimeTrackConfig
from bridge.delivery import Sink
from bridge.events import Action
from bridge.vendors.go2clock.sink import Go2ClockSink
from bridge.vendors.mctime.sink import McTimeSink
from bridge.vendors.timetrack.sink import TimeTrackSink
from tests.fakes.go2clock import FakeGo2Clock, running_fake_go2clock
from tests.fakes.mctime import FakeMcTime, running_fake_mctime
from tests.fakes.timetrack import FakeTimeTrack, running_fake_timetrack

ZONE = ZoneInfo("Europe/Berlin")

# (session, base_url, credentials, timeout_seconds) -> the sink
SinkFactory = Callable[[aiohttp.ClientSession, str, Mapping[str, str], float], Sink]


@dataclass(frozen=True, slots=True)
class SinkAdapter:
    name: str
    credentials: Mapping[str, str]  # what the fake accepts, named as in the sink's config
    wrong_credentials: Mapping[str, str]  # what it refuses
    make_fake: Callable[[], Any]
    serve: Callable[[Any], AbstractAsyncContextManager[str]]  # yields the fake's base URL
    make_sink: SinkFactory
    person: Callable[[int], str]  # the n-th test person's id at this vendor
    # Sent first and handled without the vendor (TimeTrack: the `in` that opens the shift).
    before: tuple[Action, ...]
    booking: Action  # the job that makes the vendor book something
    # make the fake refuse this person for good (TimeTrack's fake: everyone, so do it last)
    refuse_for_good: Callable[[Any, str], None]
    refusal_words: str  # the vendor's own words the dead detail must carry
    fail_next: Callable[[Any], None]  # the next request: a 5xx, nothing applied
    lose_next_answer: Callable[[Any], None]  # the next booking is applied, its answer dropped
    set_delay: Callable[[Any, float], None]  # every answer waits this long (0: none)
    bookings: Callable[[Any, str], int]  # how many bookings the vendor holds for the person

    @property
    def secrets(self) -> tuple[str, ...]:
        return (*self.credentials.values(), *self.wrong_credentials.values())


# -- Go2Clock: one punch per PUT; the vendor refuses a second userid + checktime ---------------

G2C_KEY = "g2c-Contract-KEY-5d1f0b7a"


def _go2clock_sink(
    session: aiohttp.ClientSession, base_url: str, credentials: Mapping[str, str], timeout: float
) -> Sink:
    config = Go2ClockConfig(
        base_url=base_url, api_key=SecretStr(credentials["api_key"]), timeout_seconds=timeout
    )
    return Go2ClockSink(session=session, config=config, account_tz=ZONE)


def _go2clock_bookings(fake: FakeGo2Clock, person: str) -> int:
    return sum(1 for record in fake.records if record["userid"] == person)


def _set_attr(name: str) -> Callable[[Any, Any], None]:
    def set_it(fake: Any, value: Any) -> None:
        setattr(fake, name, value)

    return set_it


GO2CLOCK = SinkAdapter(
    name="go2clock",
    credentials={"api_key": G2C_KEY},
    wrong_credentials={"api_key": "g2c-Wrong-KEY-0c9e8d7f"},
    make_fake=lambda: FakeGo2Clock(api_key=G2C_KEY),
    serve=running_fake_go2clock,
    make_sink=_go2clock_sink,
    person=lambda n: str(100 + n),
    before=(),
    booking=Action.IN,
    refuse_for_good=lambda fake, person: fake.invalid_userids.add(person),
    refusal_words=" is invalid",  # "The selected userid 101 is invalid."
    fail_next=lambda fake: _set_attr("fail_5xx")(fake, 1),
    lose_next_answer=lambda fake: _set_attr("lose_answers")(fake, 1),
    set_delay=_set_attr("delay_seconds"),
    bookings=_go2clock_bookings,
)


# -- McTime: a clock per user; `start` books it ------------------------------------------------

MCT_KEY = "mct-Contract-KEY-8a2c4e6f"


def _mctime_sink(
    session: aiohttp.ClientSession, base_url: str, credentials: Mapping[str, str], timeout: float
) -> Sink:
    config = McTimeConfig(
        base_url=base_url, api_key=SecretStr(credentials["api_key"]), timeout_seconds=timeout
    )
    return McTimeSink(session=session, config=config, site_tz=ZONE)


def _unlimited(fake: FakeMcTime) -> FakeMcTime:
    # Each scenario builds its own sink, so their rate limiters do not add up: the rate limit
    # is tested on its own (test_mctime, test_scenarios), not in the contract.
    fake.rate_limit = 1_000_000
    return fake


def _mctime_bookings(fake: FakeMcTime, person: str) -> int:
    """The person's running clock (0 or 1) plus their saved time entries. The fake cannot hold
    two clocks for one user (a second `start` is refused with 400), so for McTime the tests'
    outcome checks, not this count, are what catch a wrongly handled resend."""
    running = 1 if fake.clock_state(person) != "off" else 0
    return running + sum(1 for entry in fake.entries if entry["userId"] == person)


MCTIME = SinkAdapter(
    name="mctime",
    credentials={"api_key": MCT_KEY},
    wrong_credentials={"api_key": "mct-Wrong-KEY-1b3d5f7a"},
    make_fake=lambda: _unlimited(FakeMcTime(api_key=MCT_KEY)),
    serve=running_fake_mctime,
    make_sink=_mctime_sink,
    person=lambda n: f"u-{n}",
    before=(),
    booking=Action.IN,
    refuse_for_good=lambda fake, person: fake.unknown_users.add(person),
    refusal_words="User not found",
    fail_next=lambda fake: _set_attr("fail_503")(fake, 1),
    lose_next_answer=lambda fake: _set_attr("lose_answers")(fake, 1),
    set_delay=_set_attr("delay_seconds"),
    bookings=_mctime_bookings,
)


# -- TimeTrack: one attendance per shift; the `out` creates it ---------------------------------

TT_KEY = "tt-Contract-KEY-3e5a7c9b"
TT_SECRET = "tt-Contract-SECRET-6f4d2b0a"


def _timetrack_sink(
    session: aiohttp.ClientSession, base_url: str, credentials: Mapping[str, str], timeout: float
) -> Sink:
    config = TimeTrackConfig(
        base_url=base_url,
        api_key=SecretStr(credentials["api_key"]),
        api_secret=SecretStr(credentials["api_secret"]),
        timeout_seconds=timeout,
    )
    return TimeTrackSink(session=session, config=config, site_tz=ZONE)


def _timetrack_bookings(fake: FakeTimeTrack, person: str) -> int:
    return sum(1 for attendance in fake.live() if attendance["user"] == person)


def _refuse_timetrack_users(fake: FakeTimeTrack, person: str) -> None:
    # the fake's known_users is an allow-list: from now on it refuses every username
    del person
    fake.known_users = set()


TIMETRACK = SinkAdapter(
    name="timetrack",
    credentials={"api_key": TT_KEY, "api_secret": TT_SECRET},
    # the right key with the wrong secret: TimeTrack needs both
    wrong_credentials={"api_key": TT_KEY, "api_secret": "tt-Wrong-SECRET-9c7a5e3d"},
    make_fake=lambda: FakeTimeTrack(api_key=TT_KEY, api_secret=TT_SECRET),
    serve=running_fake_timetrack,
    make_sink=_timetrack_sink,
    person=lambda n: f"user{n}",
    before=(Action.IN,),
    booking=Action.OUT,
    refuse_for_good=_refuse_timetrack_users,
    refusal_words="does not exist",  # "User user5 does not exist"
    fail_next=lambda fake: _set_attr("fail_5xx")(fake, 1),
    lose_next_answer=lambda fake: _set_attr("lose_answers")(fake, 1),
    set_delay=_set_attr("delay_seconds"),
    bookings=_timetrack_bookings,
)

ADAPTERS = (GO2CLOCK, MCTIME, TIMETRACK)
