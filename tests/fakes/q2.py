"""The fake OpenTimeClock Q2 lives in bridge.simulators so a demo can serve it too."""

from bridge.simulators.q2 import ENDPOINT, FakeQ2, make_app, running_fake_q2

__all__ = ["ENDPOINT", "FakeQ2", "make_app", "running_fake_q2"]
