"""`clockin-bridge demo`: broker, bridge, simulated Go2Clock and terminal in one process."""

from bridge.demo.runner import run_demo

__all__ = ["run_demo"]
