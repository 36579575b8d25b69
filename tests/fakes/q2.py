"""The fake OpenTimeClock Q2 lives in bridge.vendors.q2.simulator so a demo can serve it too."""

from bridge.vendors.q2.simulator import ENDPOINT, FakeQ2, make_app, running_fake_q2

__all__ = ["ENDPOINT", "FakeQ2", "make_app", "running_fake_q2"]
