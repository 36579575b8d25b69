"""The fake Go2Clock lives in bridge.vendors.go2clock.simulator so a demo can serve it too."""

from bridge.vendors.go2clock.simulator import FakeGo2Clock, make_app, running_fake_go2clock

__all__ = ["FakeGo2Clock", "make_app", "running_fake_go2clock"]
