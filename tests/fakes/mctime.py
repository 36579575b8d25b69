"""The fake McTime lives in bridge.vendors.mctime.simulator so a demo can serve it too."""

from bridge.vendors.mctime.simulator import FakeMcTime, make_app, running_fake_mctime

__all__ = ["FakeMcTime", "make_app", "running_fake_mctime"]
