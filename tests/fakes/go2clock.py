"""The fake Go2Clock lives in bridge.simulators because `clockin-bridge demo` serves it too."""

from bridge.vendors.go2clock.simulator import FakeGo2Clock, make_app, running_fake_go2clock

__all__ = ["FakeGo2Clock", "make_app", "running_fake_go2clock"]
