"""The fake TimeTrack lives in bridge.vendors.timetrack.simulator so a demo can serve it too."""

from bridge.vendors.timetrack.simulator import (
    EXAMPLE_FIELDS,
    FakeTimeTrack,
    make_app,
    running_fake_timetrack,
)

__all__ = ["EXAMPLE_FIELDS", "FakeTimeTrack", "make_app", "running_fake_timetrack"]
