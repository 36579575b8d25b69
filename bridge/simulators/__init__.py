"""Simulated vendor services: used by `clockin-bridge demo` and by the test suite."""
