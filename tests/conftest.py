"""Shared fixtures: a real mosquitto broker started by the suite, temporary databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh broker on a free port with its own persistence directory."""
    mosquitto = Mosquitto(tmp_path / "broker")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long runs (marked slow) first: pytest-xdist hands tests out in this order, so the
    two workers run the long ones side by side while the short ones fill the gaps, rather than
    one long test starting last and the other worker idling while it runs."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
